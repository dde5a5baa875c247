//! Stable reason codes and the one mapping from a reason to what the caller
//! is told (gRPC status and HTTP status), in the style of rustls' single
//! `Error -> AlertDescription` mapping.
//!
//! The codes are part of the user contract (audit log, metrics label
//! `reason`): never rename one, add a new one instead.

/// gRPC status codes used by ztgate (a subset of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcCode {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The decimal string used in `grpc-status` and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Ok => "0",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Unimplemented => "12",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        }
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, $grpc:ident, $http:literal; )*) => {
        /// Why a request was refused. `as_str` is the stable snake_case code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, for metrics pre-registration and docs.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// The stable code used in audit lines, metrics and responses.
            pub fn as_str(self) -> &'static str {
                match self { $( Reason::$variant => $code, )* }
            }

            /// The gRPC status a gRPC caller receives.
            pub fn grpc_code(self) -> GrpcCode {
                match self { $( Reason::$variant => GrpcCode::$grpc, )* }
            }

            /// The HTTP status a non-gRPC caller receives.
            pub fn http_status(self) -> u16 {
                match self { $( Reason::$variant => $http, )* }
            }
        }
    };
}

reasons! {
    // --- caller could not prove who it is: UNAUTHENTICATED / 401 ---------
    /// `client_auth: optional` listener, and the request needs a client cert.
    ClientCertMissing => "client_cert_missing", Unauthenticated, 401;
    /// The client certificate is not a valid X.509-SVID (e.g. two URI SANs, a CA leaf).
    InvalidSvid => "invalid_svid", Unauthenticated, 401;
    /// No bearer token where one is required.
    TokenMissing => "token_missing", Unauthenticated, 401;
    /// Not a parseable JWT, or over the size cap.
    TokenMalformed => "token_malformed", Unauthenticated, 401;
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

    // --- a dependency is down, not the caller's fault: UNAVAILABLE -------
    /// The issuer's keys cannot be had (IdP unreachable, nothing cached).
    JwksUnavailable => "jwks_unavailable", Unavailable, 503;
    NoHealthyBackend => "no_healthy_backend", Unavailable, 503;
    UpstreamConnectFailed => "upstream_connect_failed", Unavailable, 502;
    UpstreamError => "upstream_error", Unavailable, 502;
    /// The shared state store (Redis) has no answer and the use is
    /// configured `on_unavailable: deny` (a replay or device check that
    /// cannot be made is not skipped).
    StateUnavailable => "state_unavailable", Unavailable, 503;

    // --- identity is fine but not allowed: PERMISSION_DENIED -------------
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

    // --- the rest --------------------------------------------------------
    NoRoute => "no_route", Unimplemented, 404;
    RateLimited => "rate_limited", ResourceExhausted, 429;
    UpstreamTimeout => "upstream_timeout", DeadlineExceeded, 504;
    /// Our own bug or an impossible state; never the caller's fault.
    Internal => "internal_error", Internal, 500;
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
            Reason::UpstreamTimeout.grpc_code(),
            GrpcCode::DeadlineExceeded
        );
    }
}
