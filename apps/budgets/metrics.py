"""Budget metrics. Labels are bounded: decision state, fail-open reason, limiter backend, outcome, scope."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

BUDGET_DECISIONS = Counter(
    "finops_budget_decisions_total",
    "Budget decisions on the request path, by resulting budget_state.",
    ["state"],  # none, ok, soft_exceeded, downgraded, blocked, fail_open, fail_closed
)
BUDGET_FAIL_OPEN = Counter(
    "finops_budget_fail_open_total",
    "Requests decided without the budget database (it timed out or failed), by reason, limiter and outcome.",
    [
        "reason",
        "limiter",
        "outcome",
    ],  # reason: timeout|lock_timeout|unavailable|suspect|error; limiter: redis|local; outcome: allowed|limited
)
BUDGET_FAIL_CLOSED = Counter(
    "finops_budget_fail_closed_total",
    "Requests refused with 503 budget_unavailable because the budget database answered with an error that is not an "
    "outage (a missing function or table, a permission or constraint error): a bug fails closed, not open.",
    ["reason"],  # undefined_function|undefined_table|permission|constraint|schema|error
)
BUDGET_CHECK_SECONDS = Histogram(
    "finops_budget_check_seconds",
    "Time to reach a budget decision (reserve round trip, or the fail-open path).",
    ["path"],  # db, fail_open
    # 0.06: the bound on a decision while the database hangs (FINOPS_BUDGET_DECISION_MAX_MS); 0.08: how far past it. bench/chaos.py.
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.06, 0.064, 0.08, 0.1, 0.25, 1.0),
)
BUDGET_SETTLE_FAILURES = Counter(
    "finops_budget_settle_failures_total",
    "Settles that did not reach the database (the reservation expires and reconcile books the cost).",
    ["reason"],
)


def budget_utilisation() -> Iterable[Metric]:
    """Highest utilisation per org and scope in the current period, read from the counters at scrape time.

    Orgs are labelled by id (`org_id`); their slug (`org`, a tenant name) only when the operator opts in with
    FINOPS_METRICS_TENANT_LABELS: whoever reads the metrics does not learn the customer list by default.
    """
    from apps.budgets.selectors import budget_utilisation_by_org_scope
    from finops.conf import conf

    names = conf().metrics_tenant_labels
    family = GaugeMetricFamily(
        "finops_budget_utilisation_ratio",
        "Highest spent/cap among the active budgets of an org and scope, current period.",
        labels=["org_id", "org", "scope"] if names else ["org_id", "scope"],
    )
    for org_id, org_slug, scope, ratio in budget_utilisation_by_org_scope():
        family.add_metric([str(org_id), org_slug, scope] if names else [str(org_id), scope], ratio)
    yield family
