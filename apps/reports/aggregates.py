"""The dashboard's month aggregates (spend overview and routing savings), cached in Django's cache until the next rollup."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.cache import cache

from apps.reports.periods import Month
from apps.reports.routing_savings import RoutingSavings, premium_reference_model, routing_savings
from apps.reports.selectors import SpendOverview, spend_overview
from apps.tenancy.access import Scope
from finops.cache import rollup_generation
from finops.conf import conf


@dataclass
class DashboardAggregates:
    overview: SpendOverview
    routing: RoutingSavings


def dashboard_aggregates(*, scope: Scope, month: Month, today: dt.date) -> DashboardAggregates:
    """spend_overview and routing_savings for one scope and month, from Django's cache (Redis) when warm.

    Both read only the rollup tables, which change only when a rollup runs; every rollup replaces the generation
    in the key (finops.cache), so a warm entry is never older than the last rollup (REPORTS_DASHBOARD_CACHE_S
    bounds it anyway). Keyed per scope (org, team) and day: budgets and open anomalies stay live, outside it.
    """
    premium_model = premium_reference_model(on=month.start)

    def compute() -> DashboardAggregates:
        return DashboardAggregates(
            overview=spend_overview(scope=scope, month=month, today=today),
            routing=routing_savings(scope=scope, start=month.start, end=month.end, premium_model=premium_model),
        )

    ttl = conf().reports_dashboard_cache_s
    if ttl <= 0:
        return compute()
    key = (
        f"reports:dashboard:{rollup_generation()}:{scope.level}:{scope.org_id or 0}:{scope.team_id or 0}:"
        f"{month.label}:{today.isoformat()}:{premium_model or ''}"
    )
    cached = cache.get(key)
    if isinstance(cached, DashboardAggregates):
        return cached
    value = compute()
    cache.set(key, value, timeout=ttl)
    return value
