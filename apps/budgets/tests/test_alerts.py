"""Threshold alerts fire once per budget, period and threshold, through the anomalies' severity routing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from apps.alerts.models import AlertDelivery, AlertRoute
from apps.budgets.models import BudgetAlert
from apps.budgets.selectors import period_start
from apps.budgets.services import budget_alerts_dispatch_pending
from apps.budgets.tests.conftest import ctx_for, run
from apps.gateway.stages import budget_reserve, budget_settle
from finops.errors import BudgetExceeded

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def email_routes(db):
    for severity in ("info", "warning", "critical"):
        AlertRoute.objects.create(name=f"finance {severity}", severity=severity, receiver="email", target="finance@example.com")


def spend(tenant, amount: str) -> None:
    ctx = ctx_for(tenant, amount)

    async def reserve_and_settle():
        await budget_reserve(ctx)
        ctx.cost_usd = Decimal(amount)
        await budget_settle(ctx)

    run(reserve_and_settle)


def test_each_threshold_fires_once_per_period(make_tenant, make_budget, budget_settings, email_routes, redis_client):
    tenant = make_tenant()
    budget = make_budget(scope="user", tenant=tenant, cap="1.00", action="alert_only", soft_pct=(50, 80))
    for amount in ("0.55", "0.10", "0.20", "0.10", "0.10", "0.30"):  # 55%, 65%, 85%, 95%, 105%, 135%
        spend(tenant, amount)
    budget_alerts_dispatch_pending()  # whatever the background dispatch did not get to
    budget_alerts_dispatch_pending()  # and again: nothing is sent twice

    alerts = list(BudgetAlert.objects.filter(budget=budget).order_by("threshold"))
    assert [a.threshold for a in alerts] == [50, 80, 100]  # the cap always alerts
    assert all(a.dispatched_at is not None and a.dispatch_result == "1 route(s)" for a in alerts)
    assert {a.period_start for a in alerts} == {period_start("monthly", timezone.now())}
    deliveries = AlertDelivery.objects.order_by("id")
    assert [d.severity for d in deliveries] == ["info", "warning", "critical"]
    assert all(d.scope_type == "member" and d.org_id == tenant.org.id for d in deliveries)
    assert "reached its cap" in deliveries.last().title


def test_a_new_period_alerts_again(make_tenant, make_budget, budget_settings, email_routes, redis_client):
    tenant = make_tenant()
    budget = make_budget(scope="team", tenant=tenant, cap="1.00", soft_pct=(50,))
    last_month = period_start("monthly", period_start("monthly", timezone.now()) - timezone.timedelta(days=1))
    BudgetAlert.objects.create(
        budget=budget,
        period_start=last_month,
        threshold=50,
        spent_usd=Decimal("0.6"),
        cap_usd=Decimal("1.00"),
        created_at=timezone.now(),
        dispatched_at=timezone.now(),
    )
    spend(tenant, "0.60")
    assert BudgetAlert.objects.filter(budget=budget, threshold=50).count() == 2


def test_refusing_at_the_cap_raises_the_cap_alert_once(make_tenant, make_budget, budget_settings, email_routes, redis_client):
    tenant = make_tenant()
    budget = make_budget(scope="org", tenant=tenant, cap="1.00")
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            run(lambda: budget_reserve(ctx_for(tenant, "2.00")))
    budget_alerts_dispatch_pending()
    alerts = BudgetAlert.objects.filter(budget=budget)
    assert [(a.threshold, a.dispatched_at is not None) for a in alerts] == [(100, True)]
    assert AlertDelivery.objects.filter(severity="critical", scope_type="org").count() == 1
