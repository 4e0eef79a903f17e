"""Reconcile: the counter follows the ledger without double-counting requests in flight."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.budgets.models import BudgetCounter
from apps.budgets.services import budget_reconcile
from apps.budgets.tasks import budget_reconcile_task
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.stages import budget_reserve, budget_settle
from apps.ledger.models import LLMRequest
from finops.models import JobRun

pytestmark = pytest.mark.django_db(transaction=True)


def ledger_row(tenant, cost: str, *, request_id: uuid.UUID | None = None, received_at: dt.datetime | None = None) -> LLMRequest:
    return LLMRequest.objects.create(
        request_id=request_id or uuid.uuid4(),
        endpoint="chat_completions",
        received_at=received_at or timezone.now(),
        org=tenant.org,
        team=tenant.team,
        member=tenant.member,
        status="served",
        cost_usd=Decimal(cost),
    )


def test_settled_and_recorded_requests_are_not_counted_twice(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    budget = make_budget(scope="team", tenant=tenant, cap="10.00")
    ctx = ctx_for(tenant, "0.50")
    run(lambda: budget_reserve(ctx))
    ctx.cost_usd = Decimal("0.40")
    run(lambda: budget_settle(ctx))
    ledger_row(tenant, "0.40", request_id=ctx.request_id)

    result = budget_reconcile()
    assert result.corrected == 0
    assert counter_of(budget).spent_usd == Decimal("0.40")


def test_requests_in_flight_are_left_to_their_settle(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    budget = make_budget(scope="user", tenant=tenant, cap="10.00")
    recorded_first = ctx_for(tenant, "0.50")  # ledger row written, settle not yet
    settled_first = ctx_for(tenant, "0.70")  # settled, ledger row not yet written
    run(lambda: budget_reserve(recorded_first))
    run(lambda: budget_reserve(settled_first))
    ledger_row(tenant, "0.30", request_id=recorded_first.request_id)
    settled_first.cost_usd = Decimal("0.60")
    run(lambda: budget_settle(settled_first))

    assert budget_reconcile().corrected == 0
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == (Decimal("0.60"), Decimal("0.50"))

    recorded_first.cost_usd = Decimal("0.30")
    run(lambda: budget_settle(recorded_first))
    ledger_row(tenant, "0.60", request_id=settled_first.request_id)
    assert budget_reconcile().corrected == 0
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == (Decimal("0.90"), Decimal(0))


def test_drift_is_corrected_and_other_periods_ignored(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    other = make_tenant(user="bob")
    budget = make_budget(scope="user", tenant=tenant, cap="10.00", period="daily")
    ledger_row(tenant, "1.25")
    ledger_row(tenant, "9.00", received_at=timezone.now() - dt.timedelta(days=2))  # an earlier period
    ledger_row(other, "3.00")  # another user
    run(lambda: budget_reserve(ctx_for(tenant, "0")))
    BudgetCounter.objects.filter(budget=budget).update(spent_usd=Decimal("7.00"), reserved_usd=Decimal("2.00"))  # drifted

    assert budget_reconcile_task().startswith("budgets=1 corrected=1")
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == (Decimal("1.25"), Decimal(0))
    assert JobRun.objects.get(name="budget_reconcile").successes == 1


def test_org_and_team_scopes_sum_their_members(make_tenant, make_budget, budget_settings):
    a = make_tenant(team="Search", user="alice")
    b = make_tenant(team="Search", user="bob")
    c = make_tenant(team="Ads", user="carol")
    team = make_budget(scope="team", tenant=a, cap="10.00")
    org = make_budget(scope="org", tenant=a, cap="10.00")
    for tenant, cost in ((a, "1.00"), (b, "2.00"), (c, "4.00")):
        ledger_row(tenant, cost)
    budget_reconcile()
    assert counter_of(team).spent_usd == Decimal("3.00")
    assert counter_of(org).spent_usd == Decimal("7.00")
