"""Fail open, bounded and visible: the budget database hangs or is down.

The hang is real: another connection holds ACCESS EXCLUSIVE on budget_counters, so the reserve's
row locks wait (the shared Postgres keeps running for everyone else). Only the outcome is asserted
here; the decision time is measured by bench/bench_budgets.py.
"""

from __future__ import annotations

import contextlib
import uuid
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.budgets.limiter import limiter_key
from apps.budgets.services import budget_reconcile
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.stages import budget_reserve
from apps.ledger.models import LLMRequest
from finops.asyncdb import get_pool
from finops.errors import BudgetExceeded, RateLimited
from finops.limiter import local_window

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def budget_counters_locked():
    db = connection.settings_dict
    conn = psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
    )
    try:
        conn.execute("LOCK TABLE budget_counters IN ACCESS EXCLUSIVE MODE")  # held until rollback
        yield
    finally:
        conn.rollback()
        conn.close()


def fail_open_count(limiter: str, outcome: str) -> float:
    total = 0.0
    for reason in ("timeout", "lock_timeout", "unavailable", "suspect", "error"):
        labels = {"reason": reason, "limiter": limiter, "outcome": outcome}
        total += REGISTRY.get_sample_value("finops_budget_fail_open_total", labels) or 0.0
    return total


@pytest.fixture
def degraded_settings(settings):
    settings.FINOPS = {
        **settings.FINOPS,
        "BUDGET_TIMEOUT_MS": 50,
        "BUDGET_FAIL_OPEN_RPM": 30,
        "BUDGET_FAIL_OPEN_MAX_TOKENS": 256,
        "BUDGET_LIMITER_TIMEOUT_MS": 200,
        # The limiter's count is what these tests check: give its Redis call the whole 200 ms, so a loaded machine
        # does not split the user's minute between Redis and the in-process fallback window (the 60 ms bound on the
        # whole decision is tested through the gateway and in make chaos).
        "BUDGET_DECISION_MAX_MS": 1000,
    }
    local_window.clear()
    return settings


def thirty_one_requests(alice, bob):
    async def scenario():
        await get_pool()  # warm: the hang is the subject here, not the first connection
        outcomes = []
        for _ in range(31):
            ctx = ctx_for(alice, "0.01", max_tokens=4000)
            try:
                await budget_reserve(ctx)
                outcomes.append(ctx)
            except RateLimited as exc:
                outcomes.append(exc)
        other = ctx_for(bob, "0.01")
        await budget_reserve(other)
        return outcomes, other

    return scenario


def assert_thirty_then_429(outcomes, other):
    admitted, refused = outcomes[:30], outcomes[30]
    for ctx in admitted:
        assert ctx.budget_state == "fail_open"
        assert ctx.degraded is True
        assert ctx.max_tokens == 256  # clamped while degraded
        assert ctx.reservation_id is None
        assert ctx.budget_remaining_usd is None
    assert isinstance(refused, RateLimited) and not isinstance(refused, BudgetExceeded)
    assert refused.status == 429 and refused.code == "budget_degraded_rate_limit"
    assert "30 per minute" in refused.message
    assert other.budget_state == "fail_open"  # another user has a window of their own


def test_db_hang_fails_open_under_the_redis_limiter(make_tenant, make_budget, degraded_settings, redis_client):
    alice = make_tenant(user="alice")
    bob = make_tenant(user="bob")
    make_budget(scope="org", tenant=alice, cap="100.00")
    before = fail_open_count("redis", "allowed"), fail_open_count("redis", "limited")

    with budget_counters_locked():
        outcomes, other = run(thirty_one_requests(alice, bob))

    assert_thirty_then_429(outcomes, other)
    assert redis_client.zcard(limiter_key(org_id=alice.org.id, member_id=alice.member.id)) == 30
    assert fail_open_count("redis", "allowed") - before[0] == 31  # 30 for alice, 1 for bob
    assert fail_open_count("redis", "limited") - before[1] == 1

    # The database is back: decisions come from the counters again. (A generous deadline: a fresh pool's
    # first call compiles the plpgsql function, which on a loaded machine can take longer than 50 ms.)
    degraded_settings.FINOPS = {**degraded_settings.FINOPS, "BUDGET_TIMEOUT_MS": 10_000}
    back = ctx_for(alice, "0.01")

    async def warm_then_reserve():
        await get_pool()
        await budget_reserve(back)

    run(warm_then_reserve)
    assert back.budget_state == "ok" and back.reservation_id is not None


def test_db_and_redis_down_fall_back_to_the_in_process_limiter(make_tenant, make_budget, degraded_settings):
    from conftest import free_port

    degraded_settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    alice = make_tenant(user="alice")
    bob = make_tenant(user="bob")
    make_budget(scope="org", tenant=alice, cap="100.00")
    before = fail_open_count("local", "limited")

    with budget_counters_locked():
        outcomes, other = run(thirty_one_requests(alice, bob))

    assert_thirty_then_429(outcomes, other)
    assert local_window.count(limiter_key(org_id=alice.org.id, member_id=alice.member.id)) == 30
    assert fail_open_count("local", "limited") - before == 1


def test_postgres_down_fails_open(make_tenant, make_budget, degraded_settings, redis_client):
    from conftest import free_port

    alice = make_tenant()
    make_budget(scope="user", tenant=alice, cap="1.00")
    ctx = ctx_for(alice, "0.01")
    db = connection.settings_dict
    saved = db["HOST"], db["PORT"]
    db["HOST"], db["PORT"] = "127.0.0.1", str(free_port())  # the pool of this run connects to nothing
    try:
        run(lambda: budget_reserve(ctx))
    finally:
        db["HOST"], db["PORT"] = saved
    assert ctx.budget_state == "fail_open"
    assert ctx.fail_open_reason == "unavailable"


def test_fail_open_spend_reaches_the_counters_on_reconcile(make_tenant, make_budget, budget_settings):
    alice = make_tenant()
    budget = make_budget(scope="user", tenant=alice, cap="1.00")
    # Requests served while the budget database was unreachable: in the ledger, not in the counter.
    for cost in ("0.25", "0.35"):
        LLMRequest.objects.create(
            request_id=uuid.uuid4(),
            endpoint="chat_completions",
            received_at=timezone.now(),
            org=alice.org,
            team=alice.team,
            member=alice.member,
            status="served",
            cost_usd=Decimal(cost),
            budget_state="fail_open",
        )
    run(lambda: budget_reserve(ctx_for(alice, "0")))  # creates the counter; spent 0
    assert counter_of(budget).spent_usd == Decimal(0)

    result = budget_reconcile()
    assert result.corrected == 1 and result.spent_delta_usd == Decimal("0.60")
    assert counter_of(budget).spent_usd == Decimal("0.60")
    with pytest.raises(BudgetExceeded):
        run(lambda: budget_reserve(ctx_for(alice, "0.50")))
