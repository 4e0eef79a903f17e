"""200 concurrent requests against a $1.00 cap, through the real hooks on the real asyncpg pool.

Each request's estimate and actual cost are known. Every request's actual is at most its estimate
except one, which costs more than estimated. The atomic reserve guarantees
    spent <= cap + sum of (actual - estimate) over underestimated requests in flight together,
so here: spent <= cap + the largest single (actual - estimate) difference.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from apps.budgets.models import Reservation
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.stages import budget_reserve, budget_settle
from finops.errors import BudgetExceeded

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REQUESTS = 200
CAP = Decimal("1.00")
CENT = Decimal("0.0001")


def known_costs(seed: int) -> list[tuple[Decimal, Decimal]]:
    rng = random.Random(seed)
    costs = []
    for _ in range(REQUESTS):
        estimate = Decimal(rng.randint(50, 400)) * CENT  # $0.005 .. $0.04
        actual = (estimate * Decimal(rng.randint(30, 100)) / 100).quantize(CENT)
        costs.append((estimate, actual))
    # The one underestimate, early enough that it is admitted.
    estimate, _ = costs[3]
    costs[3] = (estimate, estimate + Decimal("0.0250"))
    return costs


def tenants_for(level: str, make_tenant) -> list:
    if level == "user":
        return [make_tenant(org="Acme", team="Search", user="alice")]
    if level == "team":
        return [make_tenant(org="Acme", team="Search", user=f"user{i}") for i in range(5)]
    return [make_tenant(org="Acme", team=f"team{i % 3}", user=f"user{i}") for i in range(6)]


@pytest.mark.parametrize("level", ["user", "team", "org"])
def test_concurrent_reservations_never_overshoot_the_cap(level, make_tenant, make_budget, budget_settings):
    tenants = tenants_for(level, make_tenant)
    budget = make_budget(scope=level, tenant=tenants[0], cap=str(CAP))
    costs = known_costs(seed={"user": 1, "team": 2, "org": 3}[level])
    rng = random.Random(42)
    failures: list[dict] = []

    async def one(i: int):
        estimate, actual = costs[i]
        ctx = ctx_for(tenants[i % len(tenants)], estimate)
        try:
            await budget_reserve(ctx)
        except BudgetExceeded:
            return i, "blocked"
        await asyncio.sleep(rng.random() / 200)  # the upstream call: requests overlap
        ctx.cost_usd = actual
        await budget_settle(ctx)
        if ctx.budget_state == "fail_open":
            failures.append(ctx.fail_open_reason)
        return i, ctx.budget_state

    async def all_at_once():
        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))

    outcomes = run(all_at_once)

    states = {state for _, state in outcomes}
    assert "fail_open" not in states, f"the test must exercise the database path: {failures[:5]}"
    served = [i for i, state in outcomes if state != "blocked"]
    blocked = [i for i, state in outcomes if state == "blocked"]
    assert served and blocked, "the cap must be reached for the test to mean anything"

    counter = counter_of(budget)
    spent_by_requests = sum((costs[i][1] for i in served), Decimal(0))
    assert counter.spent_usd == spent_by_requests
    assert counter.reserved_usd == Decimal(0)
    largest_underestimate = max([costs[i][1] - costs[i][0] for i in served] + [Decimal(0)])
    assert counter.spent_usd <= CAP + largest_underestimate
    assert Reservation.objects.filter(state="settled").count() == len(served)
