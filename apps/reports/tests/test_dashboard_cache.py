"""The dashboard's rollup aggregates in Django's cache (Redis): per scope, invalidated by every rollup."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.ledger.services import cost_rollup
from apps.reports.periods import current_month
from apps.reports.tests.conftest import at
from apps.reports.tests.test_dashboard import dashboard_data, money, mtd  # noqa: F401 (fixture)

INDEX = "/admin/"


@pytest.fixture
def cache_on(settings, redis_client):
    settings.FINOPS = {**settings.FINOPS, "REPORTS_DASHBOARD_CACHE_S": 3600}
    return redis_client


def rollup_queries(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "cost_daily_summary" in q["sql"] or "route_daily_summary" in q["sql"]]


def test_a_warm_dashboard_skips_the_rollup_queries(client, superuser, dashboard_data, cache_on):  # noqa: F811
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as cold:
        first = client.get(INDEX).content.decode()
    with CaptureQueriesContext(connection) as warm:
        second = client.get(INDEX).content.decode()
    # Cached: the month's summary (GROUPING SETS) and the routing figures. Live: the budgets' burn-down.
    assert len(rollup_queries(cold)) == 3
    assert len(rollup_queries(warm)) == 1 and "route_daily_summary" not in rollup_queries(warm)[0]
    assert len(warm) <= len(cold) - 2
    assert money(mtd()) in first and money(mtd()) in second
    assert any(b"reports:dashboard:" in key for key in cache_on.keys("*"))


def test_each_org_has_its_own_entry(client, superuser, dashboard_data, cache_on):  # noqa: F811
    client.force_login(superuser)
    acme, globex = dashboard_data["acme"], dashboard_data["globex"]
    client.get(INDEX)
    acme_page = client.get(f"/admin/reports/org/{acme.org.id}/").content.decode()
    globex_page = client.get(f"/admin/reports/org/{globex.org.id}/").content.decode()
    assert money(mtd("acme")) in acme_page and money(mtd("globex")) in globex_page
    keys = {key.decode() for key in cache_on.keys("*reports:dashboard:*")}
    assert {k.split(":")[-6] for k in keys} == {"all", "org"}  # level
    assert {k.split(":")[-5] for k in keys} == {"0", str(acme.org.id), str(globex.org.id)}


def test_a_rollup_invalidates_the_cached_aggregates(
    client, superuser, dashboard_data, cache_on, ledger, today, django_capture_on_commit_callbacks  # noqa: F811
):
    client.force_login(superuser)
    before = mtd()
    assert money(before) in client.get(INDEX).content.decode()
    ledger.add(dashboard_data["acme"], model="gpt-4o", at=at(today, 0), prompt=90_000, completion=9_000, tier="premium")
    # Not rolled up yet: the cached figure stands (the dashboard reads the rollups, as before the cache).
    assert money(before) in client.get(INDEX).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        cost_rollup(since=current_month().start, until=today)
    after = mtd()
    assert after > before
    assert money(after) in client.get(INDEX).content.decode()
