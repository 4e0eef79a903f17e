"""Leaked reservations (the request died before settling) expire and are swept; no phantom 429 after."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.budgets.models import Reservation
from apps.budgets.services import reservation_sweep
from apps.budgets.tasks import budget_sweep_task
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.stages import budget_reserve
from finops.errors import BudgetExceeded
from finops.models import JobRun

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_leaked_reservation_is_released_by_the_sweep(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    budget = make_budget(scope="user", tenant=tenant, cap="1.00")
    leaked = ctx_for(tenant, "0.90")
    run(lambda: budget_reserve(leaked))  # ...and the request dies: never settled

    with pytest.raises(BudgetExceeded):
        run(lambda: budget_reserve(ctx_for(tenant, "0.20")))

    # Not yet expired: the sweep leaves it alone.
    assert reservation_sweep().expired == 0
    assert counter_of(budget).reserved_usd == Decimal("0.90")

    Reservation.objects.filter(pk=leaked.reservation_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert budget_sweep_task().startswith("expired=1")
    assert counter_of(budget).reserved_usd == Decimal(0)
    assert Reservation.objects.get(pk=leaked.reservation_id).state == "expired"
    assert JobRun.objects.get(name="budget_sweep").successes == 1

    after = ctx_for(tenant, "0.20")
    run(lambda: budget_reserve(after))  # no phantom 429
    assert after.budget_state == "ok"


def test_the_ttl_comes_from_settings(make_tenant, make_budget, budget_settings):
    budget_settings.FINOPS = {**budget_settings.FINOPS, "BUDGET_RESERVATION_TTL_S": 120}
    tenant = make_tenant()
    make_budget(scope="user", tenant=tenant, cap="1.00")
    ctx = ctx_for(tenant, "0.10")
    run(lambda: budget_reserve(ctx))
    reservation = Reservation.objects.get(pk=ctx.reservation_id)
    assert reservation.expires_at - reservation.created_at == dt.timedelta(seconds=120)


def test_the_sweep_purges_old_finished_reservations(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    make_budget(scope="user", tenant=tenant, cap="1.00")
    ctx = ctx_for(tenant, "0.10")
    run(lambda: budget_reserve(ctx))
    old = timezone.now() - dt.timedelta(days=30)
    Reservation.objects.filter(pk=ctx.reservation_id).update(state="settled", settled_at=old, actual_usd=Decimal("0.1"))
    assert reservation_sweep().purged == 1
    assert not Reservation.objects.exists()
