"""/metrics: the utilisation gauge (read from the counters at scrape time) and the fail-open counter."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from apps.budgets.models import BudgetCounter
from apps.budgets.selectors import period_start

pytestmark = pytest.mark.django_db


def test_metrics_expose_utilisation_per_org_and_scope(client, make_tenant, make_budget):
    tenant = make_tenant(org="Acme")
    low = make_budget(scope="user", tenant=tenant, cap="10.00")
    bob = make_tenant(org="Acme", user="bob")
    high = make_budget(scope="user", tenant=bob, cap="10.00")
    now = timezone.now()
    for budget, spent in ((low, "1"), (high, "8.5")):
        BudgetCounter.objects.create(
            budget=budget, period_start=period_start("monthly", now), spent_usd=Decimal(spent), reserved_usd=0, updated_at=now
        )
    body = client.get("/metrics").content.decode()
    assert f'finops_budget_utilisation_ratio{{org_id="{tenant.org.id}",scope="user"}} 0.85' in body
    assert "acme" not in body.lower()  # no tenant names unless FINOPS_METRICS_TENANT_LABELS
    assert "finops_budget_fail_open_total" in body
    assert "finops_budget_check_seconds" in body
    assert "bob" not in body  # no per-user labels


def test_org_slugs_are_labels_only_when_the_operator_opts_in(client, settings, make_tenant, make_budget):
    tenant = make_tenant(org="Acme")
    budget = make_budget(scope="org", tenant=tenant, cap="10.00")
    now = timezone.now()
    BudgetCounter.objects.create(
        budget=budget, period_start=period_start("monthly", now), spent_usd=Decimal("2"), reserved_usd=0, updated_at=now
    )
    settings.FINOPS = {**settings.FINOPS, "METRICS_TENANT_LABELS": True}
    body = client.get("/metrics").content.decode()
    assert f'finops_budget_utilisation_ratio{{org="acme",org_id="{tenant.org.id}",scope="org"}} 0.2' in body
