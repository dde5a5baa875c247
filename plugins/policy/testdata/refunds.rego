# A 20-rule request policy of the kind issue 14 describes: only the
# frontend workload may call Refund, only with payments:write, never for a
# blocked subject, not from anonymous networks, from allowed countries,
# for its own tenant. Used by the unit tests and the benchmark.
#
# One `decision` rule with an `else` chain: a rule defined once runs on
# regorus' bytecode VM (see the crate's engine.rs).
package ztgate
import rego.v1

default decision := {"allow": false, "reason": "no_rule_matched"}

decision := {"allow": true} if {
    not refund
    known_workload
} else := {"allow": true} if {
    refund
    refund_ok
} else := {"allow": false, "reason": "refund_blocked"} if {
    refund
}

refund if input.method == "Refund"
known_workload if startswith(input.spiffe_id, "spiffe://acme.test/")
frontend if input.spiffe_id == "spiffe://acme.test/ns/shop/sa/frontend"
can_write if "payments:write" in input.scopes
blocked if input.subject in data.blocked_subjects
anonymous if input.asn in data.anonymous_asns
allowed_country if input.country in {"DE", "FR", "NL"}
tenant_ok if input.claims.tenant == input.headers["x-tenant"]
routed if {
    input.route == "payments"
    input.upstream == "payments"
}
payments_service if input.service == "payments.v1.Payments"
own_domain if input.trust_domain == "acme.test"
our_idp if input.issuer == "https://idp.acme.test"
has_cert if count(input.thumbprint) == 64
internal_network if net.cidr_contains("10.0.0.0/8", input.client_ip)

refund_ok if {
    frontend
    can_write
    not blocked
    not anonymous
    allowed_country
    tenant_ok
    routed
    payments_service
    own_domain
    our_idp
    has_cert
    internal_network
}
