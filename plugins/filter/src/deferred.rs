//! Shared-state checks a filter defers so the chain can send them together.
//!
//! With `state.backend: redis`, a DPoP replay check (in `jwt`) and a rate
//! limit count (in `ratelimit`) are each one round trip; run inline they
//! are two sequential round trips per call. They are independent yes/no
//! questions, so a filter may instead *defer* one: it records the
//! operation and how to turn the store's answer into its decision, and
//! [`crate::Chain`] sends every deferred operation of the request in one
//! pipelined round trip, then settles each into its filter's verdict (the
//! filter's mode applied as usual; the first enforced denial in pipeline
//! order wins).
//!
//! The chain settles what is pending before any filter that acts on shared
//! state inline ([`crate::Filter::settles_before`]: first-seen binding), so
//! a replayed proof can never bind a device, and at the end of the chain,
//! denied or not, so a refused call is still counted.

use std::fmt;

use crate::state::{StateAnswer, StateError, StateOp, StateUse};
use crate::Decision;

/// Turns the store's answer (or its failure) into the filter's decision.
pub type Settle = Box<dyn FnOnce(Result<StateAnswer, StateError>) -> Decision + Send + Sync>;

/// One deferred shared-state check.
pub struct Deferred {
    pub used_by: StateUse,
    pub op: StateOp,
    pub settle: Settle,
}

/// The checks deferred so far for one request, each with the index of the
/// chain stage that deferred it (set by the chain).
#[derive(Default)]
pub struct Pending {
    pub(crate) items: Vec<(usize, Deferred)>,
    /// The stage now evaluating (set by the chain before each filter).
    pub(crate) stage: usize,
}

impl Pending {
    /// Defer `d`; the chain settles it (see the module docs).
    pub fn push(&mut self, d: Deferred) {
        self.items.push((self.stage, d));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// Pending checks belong to one evaluation of the chain: a clone of the
/// facts (for the audit, say) carries none.
impl Clone for Pending {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("items", &self.items.len())
            .finish()
    }
}
