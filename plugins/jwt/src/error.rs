//! Why a token was refused, and the one mapping to a stable [`Reason`].
//!
//! Messages reach the caller and the logs, so they never contain the token,
//! a key, or any other value taken from the request.

use ztgate_filter::{Denial, Reason};

/// A refusal by the `jwt` filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("no bearer token")]
    Missing,
    #[error("token is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: usize, max: usize },
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not configured")]
    IssuerUnknown,
    #[error("token algorithm is not allowed for its issuer or key")]
    AlgorithmNotAllowed,
    #[error("token typ is not accepted by its issuer")]
    TypeInvalid,
    #[error("token has a crit header parameter that is not understood")]
    CritUnsupported,
    #[error("no key of the issuer matches the token")]
    KeyUnknown,
    #[error("token signature is invalid")]
    SignatureInvalid,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience does not match")]
    AudienceMismatch,
    #[error("token lacks required claim `{0}`")]
    ClaimMissing(String),
    #[error("token lifetime exceeds the issuer's max_lifetime")]
    LifetimeExceeded,
    #[error("token is bound to another client certificate")]
    CertBindingMismatch,
    #[error("token is not bound to a client certificate")]
    CertBindingMissing,
    #[error("DPoP proof missing")]
    DpopMissing,
    #[error("DPoP proof invalid: {0}")]
    DpopInvalid(&'static str),
    #[error("DPoP proof replayed")]
    DpopReplay,
    #[error("DPoP proof key does not match the token binding")]
    DpopBindingMismatch,
    #[error("issuer keys are unavailable")]
    JwksUnavailable,
    /// The shared replay cache has no answer and DPoP is configured to
    /// fail closed (`state.on_unavailable.dpop: deny`).
    #[error("DPoP replay check unavailable")]
    StateUnavailable,
}

impl JwtError {
    /// The stable reason code: the caller's fault is UNAUTHENTICATED, an
    /// unreachable IdP is UNAVAILABLE.
    pub fn reason(&self) -> Reason {
        match self {
            JwtError::Missing => Reason::TokenMissing,
            JwtError::TooLarge { .. } => Reason::TokenTooLarge,
            JwtError::Malformed(_) => Reason::TokenMalformed,
            JwtError::IssuerUnknown => Reason::TokenIssuerUnknown,
            JwtError::AlgorithmNotAllowed => Reason::TokenAlgorithmNotAllowed,
            JwtError::TypeInvalid => Reason::TokenTypeInvalid,
            JwtError::CritUnsupported => Reason::TokenCritUnsupported,
            JwtError::KeyUnknown => Reason::TokenKeyUnknown,
            JwtError::SignatureInvalid => Reason::TokenSignatureInvalid,
            JwtError::Expired => Reason::TokenExpired,
            JwtError::NotYetValid => Reason::TokenNotYetValid,
            JwtError::AudienceMismatch => Reason::TokenAudienceMismatch,
            JwtError::ClaimMissing(_) => Reason::TokenClaimMissing,
            JwtError::LifetimeExceeded => Reason::TokenLifetimeExceeded,
            JwtError::CertBindingMismatch => Reason::TokenCertBindingMismatch,
            JwtError::CertBindingMissing => Reason::TokenCertBindingMissing,
            JwtError::DpopMissing => Reason::DpopProofMissing,
            JwtError::DpopInvalid(_) => Reason::DpopProofInvalid,
            JwtError::DpopReplay => Reason::DpopReplay,
            JwtError::DpopBindingMismatch => Reason::DpopBindingMismatch,
            JwtError::JwksUnavailable => Reason::JwksUnavailable,
            JwtError::StateUnavailable => Reason::StateUnavailable,
        }
    }

    /// The denial the chain reports.
    pub fn denial(&self) -> Denial {
        Denial::new(self.reason(), self.to_string())
    }
}
