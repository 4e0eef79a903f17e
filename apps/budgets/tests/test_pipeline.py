"""The reserve/settle hooks on the real asyncpg pool: decisions, messages, roll-over, idempotence."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.budgets.models import BudgetCounter, Reservation
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.context import RouteDecision
from apps.gateway.stages import budget_reserve, budget_settle
from finops.errors import BudgetExceeded

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_passes_without_budgets(make_tenant, budget_settings):
    tenant = make_tenant()
    ctx = ctx_for(tenant, "0.10")
    run(lambda: budget_reserve(ctx))
    assert ctx.budget_state == "none"
    assert ctx.reservation_id is None
    assert ctx.budget_remaining_usd is None
    assert not Reservation.objects.exists()


def test_it_reserves_on_every_level_and_settles_to_the_actual(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    user = make_budget(scope="user", tenant=tenant, cap="1.00")
    team = make_budget(scope="team", tenant=tenant, cap="5.00")
    org = make_budget(scope="org", tenant=tenant, cap="10.00", period="daily")
    ctx = ctx_for(tenant, "0.30")

    run(lambda: budget_reserve(ctx))
    assert ctx.budget_state == "ok"
    assert ctx.reserved_usd == Decimal("0.30")
    assert ctx.budget_remaining_usd == Decimal("0.70")  # the least over the three levels
    for budget in (user, team, org):
        counter = counter_of(budget)
        assert (counter.spent_usd, counter.reserved_usd) == (Decimal(0), Decimal("0.30"))

    ctx.cost_usd = Decimal("0.1234")
    run(lambda: budget_settle(ctx))
    run(lambda: budget_settle(ctx))  # idempotent
    for budget in (user, team, org):
        counter = counter_of(budget)
        assert (counter.spent_usd, counter.reserved_usd) == (Decimal("0.1234"), Decimal(0))
    reservation = Reservation.objects.get(pk=ctx.reservation_id)
    assert reservation.state == "settled" and reservation.actual_usd == Decimal("0.1234")


def test_it_blocks_with_a_message_naming_the_level_and_cap(make_tenant, make_budget, budget_settings):
    tenant = make_tenant(team="Search", user="alice")
    make_budget(scope="user", tenant=tenant, cap="5.00")
    make_budget(scope="team", tenant=tenant, cap="0.50")
    first = ctx_for(tenant, "0.40")
    run(lambda: budget_reserve(first))

    second = ctx_for(tenant, "0.20")
    with pytest.raises(BudgetExceeded) as excinfo:
        run(lambda: budget_reserve(second))
    error = excinfo.value
    assert error.status == 429 and error.code == "budget_exceeded"
    assert "Team budget exceeded" in error.message and "'Search'" in error.message and "$0.50" in error.message
    assert second.budget_state == "blocked"
    assert error.headers["X-Budget-Remaining-USD"] == "0.1000000000"
    # Nothing was reserved on any level for the refused request.
    assert Reservation.objects.count() == 1
    assert all(c.reserved_usd == Decimal("0.40") for c in BudgetCounter.objects.all())


def test_alert_only_passes_over_the_cap_as_soft_exceeded(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    make_budget(scope="org", tenant=tenant, cap="0.10", action="alert_only")
    ctx = ctx_for(tenant, "0.50")
    run(lambda: budget_reserve(ctx))
    assert ctx.budget_state == "soft_exceeded"
    assert ctx.reservation_id is not None
    assert ctx.budget_remaining_usd == Decimal(0)


def test_the_warning_zone_is_soft_exceeded(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    make_budget(scope="user", tenant=tenant, cap="1.00", soft_pct=(50, 80, 100))
    below, above = ctx_for(tenant, "0.70"), ctx_for(tenant, "0.15")
    run(lambda: budget_reserve(below))
    run(lambda: budget_reserve(above))
    assert below.budget_state == "ok"
    assert above.budget_state == "soft_exceeded"  # 85% committed, past the 80% threshold


def test_downgrade_reroutes_to_the_cheapest_and_reserves(make_tenant, make_budget, budget_settings, prices):
    from apps.routing.services import tier_model_set

    tier_model_set(ladder="default", tier="cheap", rank=0, model="gpt-4o-mini")
    tier_model_set(ladder="default", tier="premium", rank=2, model="gpt-4o")
    tenant = make_tenant()
    budget = make_budget(scope="team", tenant=tenant, cap="0.10", action="downgrade")
    ctx = ctx_for(tenant, "0.50", max_tokens=1000)
    ctx.prompt_tokens_estimate = 1000
    ctx.route = RouteDecision(model="gpt-4o", tier="premium", strategy="pinned")
    run(lambda: budget_reserve(ctx))
    assert ctx.route.strategy == "downgrade"
    assert ctx.downgraded_from == "gpt-4o"
    assert ctx.route.model == "gpt-4o-mini"
    assert ctx.budget_state == "downgraded"
    assert ctx.reservation_id is not None
    # Re-estimated at the cheap model's price, and reserved over the downgrade cap.
    assert Decimal(0) < ctx.estimated_cost_usd < Decimal("0.50")
    assert counter_of(budget).reserved_usd == ctx.estimated_cost_usd


def test_block_wins_over_downgrade(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    make_budget(scope="team", tenant=tenant, cap="0.10", action="downgrade")
    make_budget(scope="org", tenant=tenant, cap="0.10", action="block")
    ctx = ctx_for(tenant, "0.50")
    with pytest.raises(BudgetExceeded, match="Organization budget exceeded"):
        run(lambda: budget_reserve(ctx))


def test_a_new_period_starts_from_a_fresh_counter(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    budget = make_budget(scope="user", tenant=tenant, cap="1.00", period="daily")
    yesterday = timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    BudgetCounter.objects.create(
        budget=budget, period_start=yesterday, spent_usd=Decimal("5"), reserved_usd=0, updated_at=timezone.now()
    )

    ctx = ctx_for(tenant, "0.50")
    run(lambda: budget_reserve(ctx))
    assert ctx.budget_state == "ok"
    assert BudgetCounter.objects.filter(budget=budget).count() == 2
    assert counter_of(budget).reserved_usd == Decimal("0.50")


def test_settle_after_expiry_still_books_the_cost(make_tenant, make_budget, budget_settings):
    from apps.budgets.services import reservation_sweep

    tenant = make_tenant()
    budget = make_budget(scope="user", tenant=tenant, cap="1.00")
    ctx = ctx_for(tenant, "0.50")
    run(lambda: budget_reserve(ctx))
    Reservation.objects.filter(pk=ctx.reservation_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert reservation_sweep().expired == 1
    assert counter_of(budget).reserved_usd == Decimal(0)

    ctx.cost_usd = Decimal("0.20")
    run(lambda: budget_settle(ctx))
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == (Decimal("0.20"), Decimal(0))


def test_settle_never_raises(make_tenant, budget_settings):
    tenant = make_tenant()
    ctx = ctx_for(tenant, "0.10")
    ctx.reservation_id = 999_999_999  # unknown: nothing to settle
    ctx.cost_usd = Decimal("0.1")
    run(lambda: budget_settle(ctx))


def test_a_downgrade_with_nothing_cheaper_blocks(make_tenant, make_budget, budget_settings):
    from apps.routing.models import Tier
    from apps.routing.selectors import router_config_invalidate

    Tier.objects.all().delete()  # no ladder to step down
    router_config_invalidate()
    tenant = make_tenant()
    make_budget(scope="team", tenant=tenant, cap="0.10", action="downgrade")
    ctx = ctx_for(tenant, "0.50")
    ctx.route = RouteDecision(model="gpt-4o", tier="premium", strategy="pinned")
    with pytest.raises(BudgetExceeded, match="No cheaper model to downgrade to"):
        run(lambda: budget_reserve(ctx))
    assert ctx.budget_state == "blocked"
    assert not Reservation.objects.exists()


def test_settles_are_batched_and_idempotent(make_tenant, make_budget, budget_settings):
    tenant = make_tenant()
    budget = make_budget(scope="org", tenant=tenant, cap="5.00")
    contexts = [ctx_for(tenant, "0.02") for _ in range(50)]

    async def serve_all():
        for ctx in contexts:
            await budget_reserve(ctx)
        for ctx in contexts:
            ctx.cost_usd = Decimal("0.01")
            await budget_settle(ctx)
        await budget_settle(contexts[0])  # settled twice, in the same batch

    run(serve_all)
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == (Decimal("0.50"), Decimal(0))
    settled = Reservation.objects.filter(state="settled")
    assert settled.count() == 50
    assert len(set(settled.values_list("settled_at", flat=True))) == 1  # one transaction


def test_new_pool_connections_are_warmed_and_the_warmup_writes_nothing(make_tenant, make_budget, budget_settings):
    """The budget warm-up is the hot-path pool's connection init hook, so no request compiles budget_reserve."""
    from apps.budgets.hotpath import budget_connection_warm
    from finops import asyncdb

    make_budget(scope="org", tenant=make_tenant(), cap="1.00")

    async def warm_twice() -> bool:
        pool = await asyncdb.get_pool()
        async with pool.acquire() as conn:
            await budget_connection_warm(conn)  # what the init hook ran on this connection already
        return pool._init is asyncdb._connection_init

    assert budget_connection_warm in asyncdb._connection_inits
    assert run(warm_twice) is True
    assert not Reservation.objects.exists() and not BudgetCounter.objects.exists()
