//! Device policies and the pure decision over gathered inputs.
//!
//! [`decide`] does no I/O and reads no clock: the filter first gathers the
//! inputs (fingerprints, GeoIP answers, the token claim, what the first-seen
//! store observed) and then calls it, so every policy is testable with
//! plain values. Each policy has its own `mode`; a shadow policy that would
//! deny yields `ShadowDeny` and never blocks.
//!
//! Every configured policy is evaluated on every request (for the metrics);
//! the answer is the first enforced denial in the fixed order below, else
//! the first shadow denial, else continue.

use std::collections::HashSet;

use ztgate_filter::{Decision, Denial, Mode, Reason};

use crate::geoip::AnonymousFlags;

/// The policies, in evaluation order. `as_str` is the `policy` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    ClaimBinding,
    DeviceList,
    Country,
    AnonymousNetwork,
    FirstSeen,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::ClaimBinding,
        PolicyKind::DeviceList,
        PolicyKind::Country,
        PolicyKind::AnonymousNetwork,
        PolicyKind::FirstSeen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::ClaimBinding => "claim_binding",
            PolicyKind::DeviceList => "device_list",
            PolicyKind::Country => "country",
            PolicyKind::AnonymousNetwork => "anonymous_network",
            PolicyKind::FirstSeen => "first_seen",
        }
    }
}

/// What one policy concluded. `as_str` is the `result` metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Nothing to judge (no token, no subject): neither allow nor deny.
    Skip,
    Deny(Denial),
    ShadowDeny(Denial),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Skip => "skip",
            Outcome::Deny(_) => "deny",
            Outcome::ShadowDeny(_) => "shadow_deny",
        }
    }
}

/// `claim_binding`: the token claim must equal the device fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimBinding {
    pub claim: String,
    pub mode: Mode,
}

/// `devices`: fingerprint allow and deny lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// Empty: every device not denied is allowed.
    pub allow: HashSet<String>,
    pub deny: HashSet<String>,
    pub mode: Mode,
}

/// `unknown_country:` what to do when GeoIP has no country.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCountry {
    /// Default: private ranges, new allocations and missing dbs are not the
    /// caller's fault.
    #[default]
    Allow,
    Deny,
}

/// `countries`: ISO country allow and deny lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryPolicy {
    /// Empty: every country not denied is allowed.
    pub allow: HashSet<String>,
    pub deny: HashSet<String>,
    pub unknown: UnknownCountry,
    pub mode: Mode,
}

/// Anonymous-network categories of the Anonymous-IP database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonymousCategory {
    /// `is_anonymous`: any of the others.
    Anonymous,
    Vpn,
    Tor,
    Hosting,
    PublicProxy,
    ResidentialProxy,
}

impl AnonymousCategory {
    fn flagged(self, f: &AnonymousFlags) -> bool {
        match self {
            AnonymousCategory::Anonymous => f.anonymous,
            AnonymousCategory::Vpn => f.vpn,
            AnonymousCategory::Tor => f.tor,
            AnonymousCategory::Hosting => f.hosting,
            AnonymousCategory::PublicProxy => f.public_proxy,
            AnonymousCategory::ResidentialProxy => f.residential_proxy,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AnonymousCategory::Anonymous => "anonymous network",
            AnonymousCategory::Vpn => "anonymous VPN",
            AnonymousCategory::Tor => "Tor exit node",
            AnonymousCategory::Hosting => "hosting provider",
            AnonymousCategory::PublicProxy => "public proxy",
            AnonymousCategory::ResidentialProxy => "residential proxy",
        }
    }
}

/// `anonymous_networks`: deny addresses in the listed categories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousPolicy {
    pub deny: Vec<AnonymousCategory>,
    pub mode: Mode,
}

/// The built policies; `None` is "not configured".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub claim_binding: Option<ClaimBinding>,
    pub devices: Option<DeviceList>,
    pub countries: Option<CountryPolicy>,
    pub anonymous: Option<AnonymousPolicy>,
    /// Mode of the first-seen policy (its store lives in the filter).
    pub first_seen: Option<Mode>,
}

/// How the token claim compared with the fingerprint (the comparison needs
/// the secrets, so the filter does it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimCheck {
    /// No verified token on the request: nothing to bind.
    NoToken,
    /// Token without the claim, or the claim is not a string.
    Missing,
    Matches,
    Differs,
}

/// Everything `decide` needs about one request.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Current-secret fingerprint followed by previous-secret ones.
    pub fingerprints: &'a [String],
    pub claim: ClaimCheck,
    pub country: Option<&'a str>,
    pub anonymous: AnonymousFlags,
    /// `None` when the request has no subject (first-seen skipped).
    pub first_seen: Option<crate::first_seen::Observation>,
}

/// The verdict of every configured policy and the combined decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub outcomes: Vec<(PolicyKind, Outcome)>,
}

fn judge(mode: Mode, deny: Option<Denial>) -> Outcome {
    match (deny, mode) {
        (None, _) => Outcome::Allow,
        (Some(d), Mode::Enforce) => Outcome::Deny(d),
        (Some(d), Mode::Shadow) => Outcome::ShadowDeny(d),
    }
}

/// Evaluate every configured policy.
pub fn decide(p: &Policies, i: &Inputs<'_>) -> Verdict {
    let mut outcomes = Vec::with_capacity(5);

    if let Some(b) = &p.claim_binding {
        let o = match i.claim {
            ClaimCheck::NoToken => Outcome::Skip,
            ClaimCheck::Matches => Outcome::Allow,
            ClaimCheck::Missing => judge(
                b.mode,
                Some(Denial::new(
                    Reason::DeviceMismatch,
                    "token has no device binding claim",
                )),
            ),
            ClaimCheck::Differs => judge(
                b.mode,
                Some(Denial::new(
                    Reason::DeviceMismatch,
                    "token is bound to another device",
                )),
            ),
        };
        outcomes.push((PolicyKind::ClaimBinding, o));
    }

    if let Some(d) = &p.devices {
        // Any secret's fingerprint counts, so that a rotation neither
        // unblocks a denied device nor locks out an allowed one.
        let denied = i.fingerprints.iter().any(|f| d.deny.contains(f));
        let allowed = d.allow.is_empty() || i.fingerprints.iter().any(|f| d.allow.contains(f));
        let deny = if denied {
            Some(Denial::new(Reason::DeviceDenied, "device is denied"))
        } else if !allowed {
            Some(Denial::new(Reason::DeviceDenied, "device is not allowed"))
        } else {
            None
        };
        outcomes.push((PolicyKind::DeviceList, judge(d.mode, deny)));
    }

    if let Some(c) = &p.countries {
        let deny = match i.country {
            None => (c.unknown == UnknownCountry::Deny)
                .then(|| Denial::new(Reason::GeoDenied, "country unknown")),
            Some(cc) if c.deny.contains(cc) => {
                Some(Denial::new(Reason::GeoDenied, "country is denied"))
            }
            Some(cc) if !c.allow.is_empty() && !c.allow.contains(cc) => {
                Some(Denial::new(Reason::GeoDenied, "country is not allowed"))
            }
            Some(_) => None,
        };
        outcomes.push((PolicyKind::Country, judge(c.mode, deny)));
    }

    if let Some(a) = &p.anonymous {
        let deny = a
            .deny
            .iter()
            .find(|cat| cat.flagged(&i.anonymous))
            .map(|cat| Denial::new(Reason::AnonymousNetwork, cat.as_str()));
        outcomes.push((PolicyKind::AnonymousNetwork, judge(a.mode, deny)));
    }

    if let Some(mode) = p.first_seen {
        use crate::first_seen::Observation;
        let o = match i.first_seen {
            None => Outcome::Skip,
            Some(Observation::Bound | Observation::Same) => Outcome::Allow,
            Some(Observation::Changed) => judge(
                mode,
                Some(Denial::new(
                    Reason::DeviceChanged,
                    "subject was recently seen on another device",
                )),
            ),
        };
        outcomes.push((PolicyKind::FirstSeen, o));
    }

    let enforced = outcomes.iter().find_map(|(_, o)| match o {
        Outcome::Deny(d) => Some(Decision::Deny(d.clone())),
        _ => None,
    });
    let shadow = || {
        outcomes.iter().find_map(|(_, o)| match o {
            Outcome::ShadowDeny(d) => Some(Decision::ShadowDeny(d.clone())),
            _ => None,
        })
    };
    let decision = enforced.or_else(shadow).unwrap_or(Decision::Continue);
    Verdict { decision, outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::first_seen::Observation;

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn inputs<'a>(fps: &'a [String]) -> Inputs<'a> {
        Inputs {
            fingerprints: fps,
            claim: ClaimCheck::Matches,
            country: Some("SE"),
            anonymous: AnonymousFlags::default(),
            first_seen: Some(Observation::Same),
        }
    }

    fn reason(v: &Verdict) -> Option<(Reason, bool)> {
        match &v.decision {
            Decision::Deny(d) => Some((d.reason, true)),
            Decision::ShadowDeny(d) => Some((d.reason, false)),
            Decision::Continue => None,
        }
    }

    /// Run one policy in both modes: enforce denies, shadow only records.
    fn both_modes(make: impl Fn(Mode) -> Policies, i: &Inputs<'_>, want: Reason) {
        let v = decide(&make(Mode::Enforce), i);
        assert_eq!(reason(&v), Some((want, true)), "{v:?}");
        let v = decide(&make(Mode::Shadow), i);
        assert_eq!(reason(&v), Some((want, false)), "{v:?}");
        assert_eq!(v.outcomes[0].1.as_str(), "shadow_deny");
    }

    #[test]
    fn nothing_configured_continues() {
        let fps = vec!["F".to_string()];
        let v = decide(&Policies::default(), &inputs(&fps));
        assert_eq!(v.decision, Decision::Continue);
        assert!(v.outcomes.is_empty());
    }

    #[test]
    fn claim_binding() {
        let fps = vec!["F".to_string()];
        let make = |mode| Policies {
            claim_binding: Some(ClaimBinding {
                claim: "dfp".into(),
                mode,
            }),
            ..Policies::default()
        };
        assert_eq!(
            decide(&make(Mode::Enforce), &inputs(&fps)).decision,
            Decision::Continue
        );
        for claim in [ClaimCheck::Differs, ClaimCheck::Missing] {
            let i = Inputs {
                claim,
                ..inputs(&fps)
            };
            both_modes(make, &i, Reason::DeviceMismatch);
        }
        let i = Inputs {
            claim: ClaimCheck::NoToken,
            ..inputs(&fps)
        };
        let v = decide(&make(Mode::Enforce), &i);
        assert_eq!(v.decision, Decision::Continue);
        assert_eq!(v.outcomes[0].1, Outcome::Skip);
    }

    #[test]
    fn device_lists_and_rotation() {
        let deny = |mode| Policies {
            devices: Some(DeviceList {
                allow: set(&[]),
                deny: set(&["OLD"]),
                mode,
            }),
            ..Policies::default()
        };
        // Denied under a previous secret's value: still denied.
        let fps = vec!["NEW".to_string(), "OLD".to_string()];
        both_modes(deny, &inputs(&fps), Reason::DeviceDenied);
        let other = vec!["X".to_string()];
        assert_eq!(
            decide(&deny(Mode::Enforce), &inputs(&other)).decision,
            Decision::Continue
        );

        let allow = |mode| Policies {
            devices: Some(DeviceList {
                allow: set(&["A"]),
                deny: set(&[]),
                mode,
            }),
            ..Policies::default()
        };
        both_modes(allow, &inputs(&other), Reason::DeviceDenied);
        let a = vec!["A".to_string()];
        assert_eq!(
            decide(&allow(Mode::Enforce), &inputs(&a)).decision,
            Decision::Continue
        );
    }

    #[test]
    fn countries() {
        let fps = vec!["F".to_string()];
        let make = |allow: &[&str], deny: &[&str], unknown| {
            let (allow, deny) = (set(allow), set(deny));
            move |mode| Policies {
                countries: Some(CountryPolicy {
                    allow: allow.clone(),
                    deny: deny.clone(),
                    unknown,
                    mode,
                }),
                ..Policies::default()
            }
        };
        let gb = Inputs {
            country: Some("GB"),
            ..inputs(&fps)
        };
        both_modes(
            make(&[], &["GB"], UnknownCountry::Allow),
            &gb,
            Reason::GeoDenied,
        );
        both_modes(
            make(&["SE"], &[], UnknownCountry::Allow),
            &gb,
            Reason::GeoDenied,
        );
        let ok = make(&["SE", "GB"], &["US"], UnknownCountry::Allow)(Mode::Enforce);
        assert_eq!(decide(&ok, &gb).decision, Decision::Continue);
        let unknown = Inputs {
            country: None,
            ..inputs(&fps)
        };
        assert_eq!(decide(&ok, &unknown).decision, Decision::Continue);
        both_modes(
            make(&["SE"], &[], UnknownCountry::Deny),
            &unknown,
            Reason::GeoDenied,
        );
    }

    #[test]
    fn anonymous_networks() {
        let fps = vec!["F".to_string()];
        let make = |mode| Policies {
            anonymous: Some(AnonymousPolicy {
                deny: vec![AnonymousCategory::Tor, AnonymousCategory::Hosting],
                mode,
            }),
            ..Policies::default()
        };
        let tor = Inputs {
            anonymous: AnonymousFlags {
                anonymous: true,
                tor: true,
                ..AnonymousFlags::default()
            },
            ..inputs(&fps)
        };
        both_modes(make, &tor, Reason::AnonymousNetwork);
        // A VPN is not in the configured categories.
        let vpn = Inputs {
            anonymous: AnonymousFlags {
                anonymous: true,
                vpn: true,
                ..AnonymousFlags::default()
            },
            ..inputs(&fps)
        };
        assert_eq!(
            decide(&make(Mode::Enforce), &vpn).decision,
            Decision::Continue
        );
    }

    #[test]
    fn first_seen() {
        let fps = vec!["F".to_string()];
        let make = |mode| Policies {
            first_seen: Some(mode),
            ..Policies::default()
        };
        let changed = Inputs {
            first_seen: Some(Observation::Changed),
            ..inputs(&fps)
        };
        both_modes(make, &changed, Reason::DeviceChanged);
        for o in [Some(Observation::Bound), Some(Observation::Same), None] {
            let i = Inputs {
                first_seen: o,
                ..inputs(&fps)
            };
            assert_eq!(
                decide(&make(Mode::Enforce), &i).decision,
                Decision::Continue
            );
        }
    }

    #[test]
    fn enforced_denial_wins_over_earlier_shadow() {
        let fps = vec!["F".to_string()];
        let p = Policies {
            claim_binding: Some(ClaimBinding {
                claim: "dfp".into(),
                mode: Mode::Shadow,
            }),
            countries: Some(CountryPolicy {
                allow: set(&[]),
                deny: set(&["SE"]),
                unknown: UnknownCountry::Allow,
                mode: Mode::Enforce,
            }),
            ..Policies::default()
        };
        let i = Inputs {
            claim: ClaimCheck::Differs,
            ..inputs(&fps)
        };
        let v = decide(&p, &i);
        assert_eq!(reason(&v), Some((Reason::GeoDenied, true)));
        assert_eq!(v.outcomes.len(), 2);
        assert_eq!(v.outcomes[0].1.as_str(), "shadow_deny");
    }
}
