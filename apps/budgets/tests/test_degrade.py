"""Degrading without failing open by mistake: batched reservations, local overload, a hung database.

- The reservations waiting in one worker go out as one round trip (`budget_reserve_many`), and the counters are
  exactly what one-at-a-time reservations would have left.
- A busy event loop is not a slow database: a reply that arrived while the loop was blocked past the deadline is
  read, not thrown away as a timeout (no fail-open).
- Postgres hung (finops.testing.pgproxy holds every byte, as under SIGSTOP): the reserve fails open, and once the
  query is still unanswered after the confirmation window every later request-path query of the loop fails fast
  (`suspect`) — keys from their last known state, the cache policy bypassed — until the probe sees Postgres again.
- Postgres only slow (the reply comes after the deadline, within the confirmation window): the request failed open,
  the database is not held for down, and the reservation the late batch made is released.
No timing is asserted; a hang is detected by outcome (each call returns, with its degraded answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

import pytest
from django.db import connections

from apps.budgets.hotpath import reserve_queue
from apps.budgets.models import Reservation
from apps.budgets.tests.conftest import counter_of, ctx_for, run
from apps.gateway.stages import budget_reserve
from apps.ledger.recorder import ledger_drain, ledger_record, row_new
from conftest import test_database_url as database_url
from finops.asyncdb import DatabaseUnavailable, close_pools, db_suspect, get_pool, query_bounded
from finops.errors import BudgetExceeded
from finops.limiter import local_window
from finops.testing.pgproxy import PgProxy, pg_target

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_reservations_go_out_in_one_round_trip_with_exact_counters(make_tenant, make_budget, budget_settings):
    tenants = [make_tenant(org="Acme", team=f"team{i % 3}", user=f"user{i}") for i in range(6)]
    org = make_budget(scope="org", tenant=tenants[0], cap="1.00")
    team0 = make_budget(scope="team", tenant=tenants[0], cap="0.30")
    amounts = [Decimal("0.0300")] * 40  # $1.20 asked against $1.00 (org) and $0.30 (team0)

    async def all_at_once():
        await get_pool("budgets")
        queue = reserve_queue()
        before = queue.round_trips

        async def one(i: int):
            ctx = ctx_for(tenants[i % len(tenants)], amounts[i])
            try:
                await budget_reserve(ctx)
            except BudgetExceeded:
                return "blocked", ctx
            return ctx.budget_state, ctx

        outcomes = await asyncio.gather(*(one(i) for i in range(len(amounts))))
        return outcomes, queue.round_trips - before

    outcomes, round_trips = run(all_at_once)

    assert round_trips == 1  # 40 requests waiting in one worker: one call of budget_reserve_many
    states = [state for state, _ in outcomes]
    assert "fail_open" not in states
    admitted = [ctx for state, ctx in outcomes if state != "blocked"]
    # In array order, exactly as one-at-a-time reserves: team0 (every third request) is full after 10 × $0.03, and the
    # org after 33 in all ($0.99 ≤ $1.00); everything after is refused, at whichever level is full.
    assert len(admitted) == 33
    assert sum(1 for ctx in admitted if ctx.caller.team_id == tenants[0].team.id) == 10
    assert counter_of(org).reserved_usd == Decimal("0.0300") * 33
    assert counter_of(team0).reserved_usd == Decimal("0.0300") * 10
    assert Reservation.objects.filter(state="reserved").count() == 33
    assert len({ctx.reservation_id for ctx in admitted}) == 33


def test_a_blocked_event_loop_does_not_fail_open(make_tenant, make_budget, settings):
    """The reply comes back while the loop is blocked past the 50 ms deadline: it is local load, not a slow database."""
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 50}
    tenant = make_tenant(user="busy")
    make_budget(scope="org", tenant=tenant, cap="100.00")

    async def scenario():
        await get_pool("budgets")
        await budget_reserve(ctx_for(tenant, "0.01"))  # warm
        contexts = [ctx_for(tenant, "0.01") for _ in range(20)]
        tasks = [asyncio.ensure_future(budget_reserve(ctx)) for ctx in contexts]
        for _ in range(3):
            await asyncio.sleep(0)  # the batch is sent…
        time.sleep(0.3)  # …and the loop is busy far past the deadline (CPU work of other requests)
        await asyncio.gather(*tasks)
        return contexts, db_suspect()

    contexts, suspect = run(scenario)
    assert [ctx.budget_state for ctx in contexts] == ["ok"] * 20
    assert suspect is False


def test_another_querys_overdue_reply_does_not_fail_the_budget_open(make_tenant, make_budget, settings):
    """A slow vector search (trips=False) or a key lookup past its deadline (still in its confirmation window) is no
    evidence against the budgets: their batch is sent and waits out its own deadline (failing open would spend the
    fail-open limiter's allowance, and under CPU load turn into 429s)."""
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 50, "DB_CONFIRM_TIMEOUT_MS": 5000}
    tenant = make_tenant(user="neighbour")
    make_budget(scope="org", tenant=tenant, cap="100.00")

    async def scenario():
        await get_pool()
        await get_pool("budgets")
        await budget_reserve(ctx_for(tenant, "0.01"))  # warm
        outcomes = []
        for trips in (False, True):
            with pytest.raises(DatabaseUnavailable) as slow:
                await query_bounded("fetchval", "SELECT pg_sleep(1.5)", timeout_ms=20, trips=trips)
            suspect = db_suspect()  # the slow query is overdue, in its confirmation window
            ctx = ctx_for(tenant, "0.01")
            await budget_reserve(ctx)
            outcomes.append((slow.value.reason, suspect, ctx.budget_state, ctx.fail_open_reason))
        deadline = time.monotonic() + 30
        while db_suspect() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the late reply arrives within the confirmation window
        return outcomes, db_suspect()

    outcomes, suspect_after = run(scenario)
    assert outcomes == [("timeout", False, "ok", ""), ("timeout", True, "ok", "")]
    assert suspect_after is False  # a late answer is a slow database, not a down one


@contextlib.contextmanager
def through(proxy: PgProxy):
    """This process's asyncpg pools connect through the proxy (the Django connection of the test stays direct)."""
    db = connections["default"].settings_dict
    saved = db["HOST"], db["PORT"]
    db["HOST"], db["PORT"] = "127.0.0.1", str(proxy.port)
    try:
        yield
    finally:
        db["HOST"], db["PORT"] = saved


def test_a_hung_database_fails_open_and_the_next_queries_fail_fast(make_tenant, make_budget, settings, redis_client):
    settings.FINOPS = {
        **settings.FINOPS,
        "BUDGET_TIMEOUT_MS": 50,
        "API_KEY_CACHE_SECONDS": 0,  # every key lookup goes to the database (or its stale entry)
        "BUDGET_DECISION_MAX_MS": 1000,
        "BUDGET_LIMITER_TIMEOUT_MS": 200,
        "LEDGER_INSERT_TIMEOUT_S": 0.5,
    }
    local_window.clear()
    tenant = make_tenant(user="hung")
    make_budget(scope="org", tenant=tenant, cap="100.00")
    proxy = PgProxy(pg_target(database_url()))

    async def scenario():
        from apps.cache.selectors import cache_policy_for, cache_policy_forget
        from apps.tenancy.keys import caller_cache_clear, caller_for_secret

        caller_cache_clear()
        cache_policy_forget()
        await get_pool()
        await get_pool("budgets")
        known, _ = await caller_for_secret(tenant.secret)  # confirmed by Postgres: may be served stale later
        assert known is not None
        before = ctx_for(tenant, "0.01")
        await budget_reserve(before)

        proxy.hang()
        try:
            during = ctx_for(tenant, "0.01")
            await asyncio.wait_for(budget_reserve(during), 30)  # the deadline gives up; 30 s only means "not hung"
            deadline = time.monotonic() + 30
            while not db_suspect() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # still no answer after the confirmation window: held for down
            suspect_after_reserve = db_suspect()
            stale, revoked = await asyncio.wait_for(caller_for_secret(tenant.secret), 30)
            cache_policy_forget()
            with pytest.raises(DatabaseUnavailable) as policy:
                await asyncio.wait_for(cache_policy_for(org_id=tenant.org.id, model_class="gpt-4o-mini"), 30)
            again = ctx_for(tenant, "0.01")
            await asyncio.wait_for(budget_reserve(again), 30)
            row = row_new(endpoint="chat_completions", org_id=tenant.org.id, status="served")
            await asyncio.wait_for(ledger_record(row), 30)  # past LEDGER_INSERT_TIMEOUT_S: to the outbox
        finally:
            proxy.resume()
        deadline = time.monotonic() + 30
        while db_suspect() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the probe sees Postgres answer again
        after = ctx_for(tenant, "0.01")
        await budget_reserve(after)
        one = await query_bounded("fetchval", "SELECT 1")
        await ledger_drain()
        await close_pools()
        return before, during, suspect_after_reserve, (stale, revoked), policy.value.reason, again, after, one, row

    try:
        with through(proxy):
            before, during, suspect, key, policy_reason, again, after, one, row = run(scenario)
    finally:
        proxy.close()

    assert before.budget_state == "ok"
    assert during.budget_state == "fail_open" and during.fail_open_reason == "timeout"
    assert suspect is True
    assert key[0] is not None and key[0].member_id == tenant.member.id and key[1] is False  # known key: last state
    assert policy_reason == "suspect"  # no round trip while the database is held for down
    assert again.budget_state == "fail_open" and again.fail_open_reason == "suspect"
    assert after.budget_state == "ok" and one == 1  # Postgres answers again: back on the database path
    outbox = redis_client.xrange(settings.FINOPS["LEDGER_OUTBOX_STREAM"])
    assert any(str(row["request_id"]).encode() in fields[b"row"] for _, fields in outbox)  # the row waits in the outbox


def test_a_late_reply_is_not_an_outage_and_its_reservation_is_released(make_tenant, make_budget, settings):
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 50, "DB_CONFIRM_TIMEOUT_MS": 5000}
    local_window.clear()
    tenant = make_tenant(user="slow")
    budget = make_budget(scope="org", tenant=tenant, cap="100.00")
    proxy = PgProxy(pg_target(database_url()))

    async def scenario():
        from apps.budgets.hotpath import background_drain

        await get_pool("budgets")
        await budget_reserve(ctx_for(tenant, "0.01"))  # warm (its reservation stays: $0.01 reserved)
        proxy.hang()
        slow = ctx_for(tenant, "0.02")
        task = asyncio.ensure_future(budget_reserve(slow))
        await asyncio.wait_for(asyncio.shield(task), 30)  # failed open at the deadline…
        proxy.resume()  # …and the batch answers afterwards, well within the confirmation window
        deadline = time.monotonic() + 30
        state_sql = "SELECT state FROM budget_reservations WHERE request_id = $1"
        state = None
        while state != "settled":
            assert time.monotonic() < deadline, "the late reservation was never released"
            await asyncio.sleep(0.05)
            with contextlib.suppress(DatabaseUnavailable):  # `suspect` until the late reply is in
                state = await query_bounded("fetchval", state_sql, slow.request_id, timeout_ms=5000)
        await background_drain()
        return slow, db_suspect()

    try:
        with through(proxy):
            slow, suspect = run(scenario)
    finally:
        proxy.close()
    assert slow.budget_state == "fail_open" and slow.fail_open_reason == "timeout"
    assert suspect is False  # a late answer is a slow database, not a down one
    late = Reservation.objects.get(request_id=slow.request_id)
    assert late.state == "settled" and late.actual_usd == 0  # released: nobody was going to settle it
    assert counter_of(budget).reserved_usd == Decimal("0.01")  # only the warm-up's reservation
