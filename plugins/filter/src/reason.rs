//! Stable reason codes and the one mapping from a reason to what the caller
//! is told (gRPC status and HTTP status), in the style of rustls' single
//! `Error -> AlertDescription` mapping.
//!
//! The codes are part of the user contract (audit log, metrics label
//! `reason`): never rename one, add a new one instead.

/// gRPC status codes (`google.rpc.Code`, all seventeen): what ztgate
/// answers with and what it reads back from upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// Every code, in numeric order.
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code with this number (as read from an upstream's `grpc-status`),
    /// or `None` past 16.
    pub fn from_u16(n: u16) -> Option<GrpcCode> {
        GrpcCode::ALL.get(usize::from(n)).copied()
    }

    /// The decimal string used in `grpc-status` and the metrics label: the
    /// one place these strings are written.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Ok => "0",
            GrpcCode::Cancelled => "1",
            GrpcCode::Unknown => "2",
            GrpcCode::InvalidArgument => "3",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::NotFound => "5",
            GrpcCode::AlreadyExists => "6",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::FailedPrecondition => "9",
            GrpcCode::Aborted => "10",
            GrpcCode::OutOfRange => "11",
            GrpcCode::Unimplemented => "12",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::DataLoss => "15",
            GrpcCode::Unauthenticated => "16",
        }
    }
}

/// Whose fault a refusal is, as Pingora's `ErrorSource` records for its
/// errors (Downstream / Upstream / Internal). It decides how the request is
/// counted: the caller's fault is a `deny` (policy working as meant), a
/// dependency's or our own an `error` (something to page about), and an
/// alert on `decision="error"` must not fire because clients sent bad
/// tokens, nor stay silent while every backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request itself: no or bad credentials, not allowed, no such
    /// method, over its limit.
    Caller,
    /// Something the gateway depends on: the IdP, the state store, a
    /// backend (down, refusing, slow, reset).
    Dependency,
    /// The gateway's own bug or an impossible state.
    Internal,
}

impl Fault {
    /// The `decision` of a request refused for a reason with this fault.
    pub fn outcome(self) -> Outcome {
        match self {
            Fault::Caller => Outcome::Deny,
            Fault::Dependency | Fault::Internal => Outcome::Error,
        }
    }
}

/// How a request ended: the `decision` label of `ztgate_requests_total`,
/// the audit line's `decision` and `ztgate explain`'s result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded, nothing objected.
    Allow,
    /// Forwarded, but a filter or route in shadow mode would have refused.
    ShadowDeny,
    /// Refused for the caller's fault.
    Deny,
    /// Refused or failed because of a dependency or the gateway itself.
    Error,
}

impl Outcome {
    /// The request's outcome from the reason it was refused for (if it
    /// was) and whether shadow mode let a refusal through: the one place the
    /// `decision` is worked out, for the proxy and `ztgate explain` alike.
    pub fn of(refused: Option<Reason>, shadow_denied: bool) -> Outcome {
        match refused {
            Some(r) => r.fault().outcome(),
            None if shadow_denied => Outcome::ShadowDeny,
            None => Outcome::Allow,
        }
    }

    /// The stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::ShadowDeny => "shadow_deny",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }
}

macro_rules! reasons {
    ($( $fault:ident { $( $(#[$doc:meta])* $variant:ident => $code:literal, $grpc:ident, $http:literal; )* } )*) => {
        /// Why a request was refused. `as_str` is the stable snake_case code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $( $(#[$doc])* $variant, )* )*
            /// A code the `policy` filter's Rego chose for its denial
            /// (`{allow: false, reason: "refund_blocked"}`): 7
            /// PERMISSION_DENIED like [`Reason::PolicyDenied`], under the
            /// policy's own name (see [`PolicyCode`]).
            Policy(PolicyCode),
        }

        impl Reason {
            /// Every fixed reason, for metrics pre-registration and docs
            /// (a policy's own codes, [`Reason::Policy`], are not known
            /// ahead).
            pub const ALL: &'static [Reason] = &[ $( $( Reason::$variant, )* )* ];

            /// The stable code used in audit lines, metrics and responses.
            pub fn as_str(self) -> &'static str {
                match self { $( $( Reason::$variant => $code, )* )* Reason::Policy(c) => c.as_str() }
            }

            /// Whose fault the refusal is (the group it is listed in).
            pub fn fault(self) -> Fault {
                match self { $( $( Reason::$variant => Fault::$fault, )* )* Reason::Policy(_) => Fault::Caller }
            }

            /// The gRPC status a gRPC caller receives.
            pub fn grpc_code(self) -> GrpcCode {
                match self { $( $( Reason::$variant => GrpcCode::$grpc, )* )* Reason::Policy(_) => GrpcCode::PermissionDenied }
            }

            /// The HTTP status a non-gRPC caller receives.
            pub fn http_status(self) -> u16 {
                match self { $( $( Reason::$variant => $http, )* )* Reason::Policy(_) => 403 }
            }
        }
    };
}

// Each reason is listed in the group of whose fault it is; the unit tests
// hold the statuses to the groups (the caller's fault is a 4xx and never
// UNAVAILABLE; a dependency's is UNAVAILABLE or DEADLINE_EXCEEDED; ours is
// INTERNAL), so a new reason cannot be counted as one kind and answered as
// another.
reasons! {
    Caller {
        // --- caller could not prove who it is: UNAUTHENTICATED / 401 -----
        /// `client_auth: optional` listener, and the request needs a client cert.
        ClientCertMissing => "client_cert_missing", Unauthenticated, 401;
        /// The client certificate is not a valid X.509-SVID (e.g. two URI SANs, a CA leaf).
        InvalidSvid => "invalid_svid", Unauthenticated, 401;
        /// No bearer token where one is required.
        TokenMissing => "token_missing", Unauthenticated, 401;
        /// Not a parseable JWT.
        TokenMalformed => "token_malformed", Unauthenticated, 401;
        /// The bearer token is longer than `jwt.max_token_size`: refused by
        /// its length before any parsing (a caller mistake, so 16, not the
        /// 8 RESOURCE_EXHAUSTED of a whole header list over the limit).
        TokenTooLarge => "token_too_large", Unauthenticated, 401;
        TokenExpired => "token_expired", Unauthenticated, 401;
        TokenNotYetValid => "token_not_yet_valid", Unauthenticated, 401;
        /// `iss` is not a configured issuer (refused without any network call).
        TokenIssuerUnknown => "token_issuer_unknown", Unauthenticated, 401;
        TokenAudienceMismatch => "token_audience_mismatch", Unauthenticated, 401;
        /// `typ` header not allowed for the issuer (e.g. an ID token replayed as an access token).
        TokenTypeInvalid => "token_type_invalid", Unauthenticated, 401;
        TokenAlgorithmNotAllowed => "token_algorithm_not_allowed", Unauthenticated, 401;
        TokenSignatureInvalid => "token_signature_invalid", Unauthenticated, 401;
        /// No key with the token's `kid`, even after a refetch.
        TokenKeyUnknown => "token_key_unknown", Unauthenticated, 401;
        TokenClaimMissing => "token_claim_missing", Unauthenticated, 401;
        /// `exp - iat` longer than the issuer's `max_lifetime`.
        TokenLifetimeExceeded => "token_lifetime_exceeded", Unauthenticated, 401;
        /// A `crit` header parameter we do not understand.
        TokenCritUnsupported => "token_crit_unsupported", Unauthenticated, 401;
        /// RFC 8705: `cnf.x5t#S256` does not match the client certificate.
        TokenCertBindingMismatch => "token_cert_binding_mismatch", Unauthenticated, 401;
        /// RFC 8705 binding required by the issuer but absent.
        TokenCertBindingMissing => "token_cert_binding_missing", Unauthenticated, 401;
        /// A DPoP-bound token presented as `Bearer`, or DPoP required and absent.
        DpopProofMissing => "dpop_proof_missing", Unauthenticated, 401;
        DpopProofInvalid => "dpop_proof_invalid", Unauthenticated, 401;
        DpopReplay => "dpop_replay", Unauthenticated, 401;
        DpopBindingMismatch => "dpop_binding_mismatch", Unauthenticated, 401;

        // --- identity is fine but not allowed: PERMISSION_DENIED ---------
        TrustDomainNotAllowed => "trust_domain_not_allowed", PermissionDenied, 403;
        SpiffeIdNotAllowed => "spiffe_id_not_allowed", PermissionDenied, 403;
        /// The route's SPIFFE rules refuse this workload.
        IdentityNotAllowed => "identity_not_allowed", PermissionDenied, 403;
        ScopeMissing => "scope_missing", PermissionDenied, 403;
        /// The token's device claim does not equal the fingerprint.
        DeviceMismatch => "device_mismatch", PermissionDenied, 403;
        DeviceDenied => "device_denied", PermissionDenied, 403;
        GeoDenied => "geo_denied", PermissionDenied, 403;
        AnonymousNetwork => "anonymous_network", PermissionDenied, 403;
        /// The subject's device changed within the first-seen binding TTL.
        DeviceChanged => "device_changed", PermissionDenied, 403;
        /// The `policy` filter's Rego decided `false` (or `{allow: false}`
        /// without a usable `reason`).
        PolicyDenied => "policy_denied", PermissionDenied, 403;

        // --- no such method, too many calls -------------------------------
        NoRoute => "no_route", Unimplemented, 404;
        /// The `:path` is not canonical `/package.Service/Method` (an
        /// escape, a query, a dot or empty segment): refused before routing
        /// so that what the route table matched is what the upstream gets
        /// (see `grpc_path`).
        PathNotCanonical => "path_not_canonical", Unimplemented, 404;
        RateLimited => "rate_limited", ResourceExhausted, 429;
        /// The request's header list is over the gateway's limit
        /// (`proxy::MAX_HEADER_LIST_SIZE`): refused before any filter reads
        /// a header, in gRPC terms rather than the HTTP/2 layer's bare 431.
        HeadersTooLarge => "headers_too_large", ResourceExhausted, 431;
    }

    Dependency {
        // --- a dependency is down or slow, not the caller's fault --------
        /// The issuer's keys cannot be had (IdP unreachable, nothing cached).
        JwksUnavailable => "jwks_unavailable", Unavailable, 503;
        NoHealthyBackend => "no_healthy_backend", Unavailable, 503;
        UpstreamConnectFailed => "upstream_connect_failed", Unavailable, 502;
        /// The backend violated the protocol or failed in a way other than
        /// ending the call early (see `UpstreamReset`).
        UpstreamError => "upstream_error", Unavailable, 502;
        /// The backend reset the stream (RST_STREAM), sent GOAWAY or closed
        /// its connection before the call ended, with or without response
        /// headers: answered 14 UNAVAILABLE (trailers-only, or trailers
        /// after what was already relayed), never a reset toward the caller,
        /// which gRPC clients read as CANCELLED and do not retry.
        UpstreamReset => "upstream_reset", Unavailable, 502;
        /// The shared state store (Redis) has no answer and the use is
        /// configured `on_unavailable: deny` (a replay or device check that
        /// cannot be made is not skipped).
        StateUnavailable => "state_unavailable", Unavailable, 503;
        UpstreamTimeout => "upstream_timeout", DeadlineExceeded, 504;
    }

    Internal {
        /// Our own bug or an impossible state; never the caller's fault.
        Internal => "internal_error", Internal, 500;
        /// The `policy` filter's Rego failed: a runtime error, a decision
        /// that is neither a boolean nor `{allow, reason}`, or an evaluation
        /// over its time budget. Refused (a policy that cannot answer never
        /// allows) and counted as the operator's fault, not the caller's.
        PolicyError => "policy_error", Internal, 500;
    }
}

impl Reason {
    /// Whether the answer should carry `www-authenticate: Bearer error="invalid_token"`.
    pub fn is_unauthenticated(self) -> bool {
        self.grpc_code() == GrpcCode::Unauthenticated
    }

    /// Look a reason up by its stable code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == code)
    }
}

/// A reason code chosen by a policy at run time, e.g. `refund_blocked`.
///
/// It stays `Copy` and `&'static str` like the built-in codes, so the
/// responses, metrics and audit read it through [`Reason::as_str`] as any
/// other: each distinct code is interned once for the life of the process.
/// Interning is bounded ([`PolicyCode::MAX_DISTINCT`] codes of at most
/// [`PolicyCode::MAX_LEN`] bytes, a few KiB in all), which also bounds the
/// `reason` label's cardinality: a policy that makes up codes per request
/// cannot grow the metrics without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyCode(&'static str);

/// Why a policy's code was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyCodeError {
    #[error("a reason code is 1 to 64 of `a-z`, `0-9`, `_`, starting with a letter")]
    Charset,
    /// A built-in code (`scope_missing`, `policy_error`, …): from a policy
    /// it would be read as that filter's refusal.
    #[error("a built-in reason code cannot be a policy's")]
    Reserved,
    #[error("too many distinct policy reason codes in this process")]
    TooMany,
}

impl PolicyCode {
    /// Longest code, in bytes.
    pub const MAX_LEN: usize = 64;
    /// Most distinct codes a process interns.
    pub const MAX_DISTINCT: usize = 256;

    /// The interned code for `code`, checked against the reason-code
    /// charset (the built-in codes' own: lowercase ASCII, digits, `_`).
    pub fn intern(code: &str) -> Result<PolicyCode, PolicyCodeError> {
        use std::sync::{OnceLock, RwLock};
        static CODES: OnceLock<RwLock<Vec<&'static str>>> = OnceLock::new();
        let charset_ok = code.len() <= Self::MAX_LEN
            && code.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !charset_ok {
            return Err(PolicyCodeError::Charset);
        }
        if Reason::from_code(code).is_some() {
            return Err(PolicyCodeError::Reserved);
        }
        let codes = CODES.get_or_init(|| RwLock::new(Vec::new()));
        let find = |known: &[&'static str]| known.iter().copied().find(|k| *k == code);
        // A poisoned lock only means another thread panicked while pushing
        // a &'static str: the list itself is still sound.
        let known = codes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = find(&known) {
            return Ok(PolicyCode(k));
        }
        drop(known);
        let mut known = codes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = find(&known) {
            return Ok(PolicyCode(k));
        }
        if known.len() >= Self::MAX_DISTINCT {
            return Err(PolicyCodeError::TooMany);
        }
        // Leaked on purpose, at most MAX_DISTINCT * MAX_LEN bytes: a
        // `&'static str` is what keeps `Reason` `Copy` everywhere it goes.
        let leaked: &'static str = Box::leak(code.to_owned().into_boxed_str());
        known.push(leaked);
        Ok(PolicyCode(leaked))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate {}", r.as_str());
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(Reason::from_code(r.as_str()), Some(*r));
        }
    }

    /// The statuses follow whose fault a reason is: a caller is never told
    /// to retry a refusal of its own (UNAVAILABLE), and an outage is never
    /// answered as the caller's mistake.
    #[test]
    fn statuses_follow_the_fault() {
        for r in Reason::ALL {
            let (grpc, http) = (r.grpc_code(), r.http_status());
            match r.fault() {
                Fault::Caller => {
                    assert!((400..500).contains(&http), "{r}: {http}");
                    assert!(
                        !matches!(
                            grpc,
                            GrpcCode::Ok
                                | GrpcCode::Unavailable
                                | GrpcCode::DeadlineExceeded
                                | GrpcCode::Internal
                        ),
                        "{r}: {grpc:?}"
                    );
                }
                Fault::Dependency => {
                    assert!((502..=504).contains(&http), "{r}: {http}");
                    assert!(
                        matches!(grpc, GrpcCode::Unavailable | GrpcCode::DeadlineExceeded),
                        "{r}: {grpc:?}"
                    );
                }
                Fault::Internal => {
                    assert_eq!((grpc, http), (GrpcCode::Internal, 500), "{r}");
                }
            }
        }
    }

    #[test]
    fn outcome_comes_from_the_fault() {
        assert_eq!(Outcome::of(None, false).as_str(), "allow");
        assert_eq!(Outcome::of(None, true).as_str(), "shadow_deny");
        assert_eq!(
            Outcome::of(Some(Reason::ScopeMissing), false).as_str(),
            "deny"
        );
        assert_eq!(
            Outcome::of(Some(Reason::PathNotCanonical), false).as_str(),
            "deny"
        );
        assert_eq!(
            Outcome::of(Some(Reason::RateLimited), true).as_str(),
            "deny"
        );
        // Issue 11: a backend outage is an error, not a denial, whether or
        // not a connection was ever attempted.
        assert_eq!(
            Outcome::of(Some(Reason::NoHealthyBackend), false).as_str(),
            "error"
        );
        assert_eq!(
            Outcome::of(Some(Reason::JwksUnavailable), false).as_str(),
            "error"
        );
        assert_eq!(
            Outcome::of(Some(Reason::StateUnavailable), false).as_str(),
            "error"
        );
        assert_eq!(Outcome::of(Some(Reason::Internal), false).as_str(), "error");
    }

    #[test]
    fn a_policy_code_is_checked_interned_and_answered_as_permission_denied() {
        let code = PolicyCode::intern("refund_blocked").unwrap();
        assert_eq!(PolicyCode::intern("refund_blocked"), Ok(code));
        let r = Reason::Policy(code);
        assert_eq!(r.as_str(), "refund_blocked");
        assert_eq!(
            (r.grpc_code(), r.http_status()),
            (GrpcCode::PermissionDenied, 403)
        );
        assert_eq!(Outcome::of(Some(r), false).as_str(), "deny");
        for bad in [
            "",
            "Refund",
            "refund-blocked",
            "9lives",
            "a b",
            &"x".repeat(65),
        ] {
            assert_eq!(
                PolicyCode::intern(bad),
                Err(PolicyCodeError::Charset),
                "{bad:?}"
            );
        }
        assert_eq!(
            PolicyCode::intern("scope_missing"),
            Err(PolicyCodeError::Reserved)
        );
        assert_eq!(
            PolicyCode::intern("policy_error"),
            Err(PolicyCodeError::Reserved)
        );
        assert_eq!(Reason::PolicyError.grpc_code(), GrpcCode::Internal);
        assert_eq!(
            Outcome::of(Some(Reason::PolicyError), false).as_str(),
            "error"
        );
    }

    #[test]
    fn grpc_codes_round_trip_through_their_numbers() {
        for (n, c) in GrpcCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.as_u8()), n);
            assert_eq!(c.as_str(), n.to_string());
            assert_eq!(GrpcCode::from_u16(n as u16), Some(*c));
        }
        assert_eq!(GrpcCode::from_u16(17), None);
    }

    #[test]
    fn table_matches_product_contract() {
        assert_eq!(Reason::TokenExpired.grpc_code(), GrpcCode::Unauthenticated);
        assert_eq!(Reason::TokenExpired.http_status(), 401);
        assert_eq!(Reason::JwksUnavailable.grpc_code(), GrpcCode::Unavailable);
        assert_eq!(Reason::ScopeMissing.http_status(), 403);
        assert_eq!(Reason::NoRoute.grpc_code(), GrpcCode::Unimplemented);
        assert_eq!(Reason::RateLimited.http_status(), 429);
        assert_eq!(Reason::UpstreamConnectFailed.http_status(), 502);
        assert_eq!(Reason::NoHealthyBackend.http_status(), 503);
        assert_eq!(
            Reason::PathNotCanonical.grpc_code(),
            GrpcCode::Unimplemented
        );
        assert_eq!(Reason::PathNotCanonical.http_status(), 404);
        assert_eq!(
            Reason::UpstreamTimeout.grpc_code(),
            GrpcCode::DeadlineExceeded
        );
        // PRODUCT.md "Request hygiene": an oversized token or header list
        // answers in gRPC terms, never a bare 431.
        assert_eq!(Reason::TokenTooLarge.grpc_code(), GrpcCode::Unauthenticated);
        assert_eq!(
            Reason::HeadersTooLarge.grpc_code(),
            GrpcCode::ResourceExhausted
        );
        assert_eq!(Reason::HeadersTooLarge.http_status(), 431);
        // Issue 11: a backend that resets mid-call is UNAVAILABLE (which
        // clients retry), counted as the dependency's fault.
        assert_eq!(Reason::UpstreamReset.grpc_code(), GrpcCode::Unavailable);
        assert_eq!(Reason::UpstreamReset.fault(), Fault::Dependency);
    }
}
