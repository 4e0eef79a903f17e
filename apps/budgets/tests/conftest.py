"""Budget test helpers: async runs on the real asyncpg pool and Redis, budgets and callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import pytest

from apps.budgets.models import Budget, BudgetCounter
from apps.gateway.context import Caller, RequestContext

T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run on a fresh event loop, then close what the loop owned (pool, Redis client, background tasks).

    What the loop owned (finops.runtime: the pool, the Redis client, the settle queue) is closed with it.
    """
    from asgiref.sync import sync_to_async
    from django.db import connections

    from apps.budgets.hotpath import background_drain
    from finops.runtime import runtime_close

    async def main() -> T:
        try:
            return await factory()
        finally:
            await background_drain()
            await runtime_close()  # the settle queue drains, then Redis and the pool close
            # sync_to_async(thread_sensitive=True) work (e.g. the router's config load) ran in asgiref's
            # shared thread; close the database connection it left there.
            await sync_to_async(connections.close_all)()

    return asyncio.run(main())


def caller_for(tenant) -> Caller:
    return Caller(
        api_key_id=tenant.api_key.id,
        api_key_prefix=tenant.api_key.prefix,
        org_id=tenant.org.id,
        team_id=tenant.team.id,
        member_id=tenant.member.id,
    )


def ctx_for(tenant, estimate: Decimal | str, *, max_tokens: int | None = None) -> RequestContext:
    ctx = RequestContext(endpoint="chat_completions", caller=caller_for(tenant))
    ctx.estimated_cost_usd = Decimal(estimate)
    ctx.max_tokens = max_tokens
    ctx.requested_model = "gpt-4o-mini"
    return ctx


def counter_of(budget: Budget) -> BudgetCounter:
    return BudgetCounter.objects.filter(budget=budget).order_by("-period_start").first()


@pytest.fixture
def make_budget():
    from apps.budgets.services import budget_create

    def make(*, scope: str, tenant, cap: str, period: str = "monthly", action: str = "block", soft_pct=(50, 80, 100)) -> Budget:
        budget = Budget(
            scope=scope,
            org=tenant.org,
            team=tenant.team if scope in ("team", "user") else None,
            member=tenant.member if scope == "user" else None,
            period=period,
            cap_usd=Decimal(cap),
            action=action,
            soft_pct=list(soft_pct),
        )
        return budget_create(budget=budget)

    return make


@pytest.fixture
def budget_settings(settings):
    """Generous deadlines for tests that are about correctness, not the fail-open bound."""
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 60_000, "BUDGET_SETTLE_TIMEOUT_MS": 60_000}
    return settings
