//! The `route` filter: the compiled table plus the per-request decision.

use ztgate_filter::{Decision, Facts, Filter, Mode, Reason, RequestView, SelectedRoute};

use crate::select::{pick, Caller};
use crate::table::RouteTable;

/// The `route` request filter of one config generation.
#[derive(Debug, Clone)]
pub struct RouteFilter {
    table: RouteTable,
}

impl RouteFilter {
    pub(crate) fn new(table: RouteTable) -> Self {
        Self { table }
    }

    /// The compiled table (for `ztgate explain` and benches).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The pure decision: route lookup, then the route's SPIFFE rule, then
    /// its `select` list. Writes `facts.route` whenever the request is
    /// forwarded (including a shadow route's denial, see the crate docs).
    pub fn decide(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        let Some(route) = self.table.lookup(req.path, req.authority) else {
            return Decision::deny(Reason::NoRoute, "no route for this method");
        };
        let caller = Caller {
            spiffe_id: facts.spiffe_id(),
            has_cert: req.peer().is_some(),
            scopes: facts.scopes(),
        };
        let picked = match route.spiffe() {
            Some(list) if !list.allows(caller.spiffe_id) => Err(ztgate_filter::Denial::new(
                caller.identity_reason(),
                format!(
                    "route {}: the workload identity is not allowed",
                    route.name()
                ),
            )),
            _ => pick(route.name(), route.select(), &caller),
        };
        let (entry, decision) = match (picked, route.mode()) {
            (Ok(entry), _) => (Some(entry), Decision::Continue),
            (Err(denial), Mode::Enforce) => (None, Decision::Deny(denial)),
            // Shadow: the rules are recorded, not enforced. With every rule
            // switched off the ordered list would pick its first entry, so
            // that is where the request goes.
            (Err(denial), Mode::Shadow) => (route.select().first(), Decision::ShadowDeny(denial)),
        };
        if let Some(entry) = entry {
            facts.set_route(SelectedRoute::attested_by_route(
                route.name().clone(),
                entry.upstream().clone(),
            ));
        }
        decision
    }
}

#[async_trait::async_trait]
impl Filter for RouteFilter {
    fn name(&self) -> &'static str {
        ztgate_filter::FilterKind::Route.as_str()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        self.decide(req, facts)
    }
}
