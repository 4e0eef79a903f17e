"""Budget check latency: the asyncpg three-tier reserve vs the sync ORM baseline, and fail-open when Postgres hangs.

Measured in one process, on a fresh `finops_bench_budgets` database on the shared server:
- floor: `SELECT 1` on the same asyncpg pool (one round trip, nothing else);
- the hot path: `apps.gateway.stages.budget_reserve` → `apps.budgets.gate.budget_reserve` (one call of the `budget_reserve` SQL function
  against user, team and org budgets) and `budget_settle`;
- the deprecated baseline (ADR-005): the budget rows and counters read with the Django ORM, called
  through `sync_to_async` as an async view would; plus the same reserve done with the ORM
  (select_for_update + F() updates in a transaction), for a like-for-like comparison;
- fail-open decision time with the database hanging, two ways: a lock held on `budget_counters`
  (the server answers other queries) and a TCP proxy in front of Postgres that stops forwarding
  (the server is unreachable mid-query, cancel requests included).

Target: asyncpg p95 ≤ 2 ms; fail-open decision ≤ 60 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evals.report import percentile, write_section  # noqa: E402
from finops import clock  # noqa: E402
from finops.envfile import load_env_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("FINOPS_BENCH_BUDGETS_DB", "finops_bench_budgets")


def database_url(name: str) -> str:
    load_env_file()
    return urlparse(os.environ["DATABASE_URL"])._replace(path=f"/{name}").geturl()


def prepare_database() -> None:
    import subprocess

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    env = {**os.environ, "DATABASE_URL": database_url(BENCH_DB), "DJANGO_SETTINGS_MODULE": "finops.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


def setup_django() -> None:
    os.environ["DATABASE_URL"] = database_url(BENCH_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "finops.settings"
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()


def tenants(count: int):
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create
    from apps.gateway.context import Caller
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    org = org_get_or_create(name="Bench Org")
    team = team_get_or_create(org=org, name="Bench Team")
    budget_create(budget=Budget(scope="org", org=org, period="monthly", cap_usd=Decimal("9000000")))
    budget_create(budget=Budget(scope="team", org=org, team=team, period="monthly", cap_usd=Decimal("900000")))
    callers = []
    for i in range(count):
        member = member_get_or_create(team=team, username=f"bench{i}")
        budget_create(budget=Budget(scope="user", org=org, team=team, member=member, period="daily", cap_usd=Decimal("90000")))
        key = api_key_create(member=member).api_key
        callers.append(Caller(api_key_id=key.id, api_key_prefix=key.prefix, org_id=org.id, team_id=team.id, member_id=member.id))
    return callers


def orm_budget_read(caller, amount: Decimal) -> bool:
    """The deprecated check: read the budgets and this period's counters with the ORM, compare. Racy by design."""
    from django.db.models import Q

    from apps.budgets.models import Budget, BudgetCounter
    from apps.budgets.selectors import period_start

    now = clock.now()
    budgets = list(
        Budget.objects.filter(active=True).filter(
            Q(scope="user", member_id=caller.member_id)
            | Q(scope="team", team_id=caller.team_id)
            | Q(scope="org", org_id=caller.org_id)
        )
    )
    counters = {
        c.budget_id: c
        for c in BudgetCounter.objects.filter(
            Q(budget__in=[b for b in budgets if b.period == "daily"], period_start=period_start("daily", now))
            | Q(budget__in=[b for b in budgets if b.period == "monthly"], period_start=period_start("monthly", now))
        )
    }
    for budget in budgets:
        counter = counters.get(budget.id)
        used = (counter.spent_usd + counter.reserved_usd) if counter else Decimal(0)
        if used + amount > budget.cap_usd:
            return False
    return True


def orm_budget_reserve(caller, amount: Decimal) -> bool:
    """The same work as the SQL function, with the ORM: lock the counters in id order, check, reserve."""
    from django.db import transaction
    from django.db.models import F, Q

    from apps.budgets.models import Budget, BudgetCounter
    from apps.budgets.selectors import period_start

    now = clock.now()
    with transaction.atomic():
        budgets = list(
            Budget.objects.filter(active=True).filter(
                Q(scope="user", member_id=caller.member_id)
                | Q(scope="team", team_id=caller.team_id)
                | Q(scope="org", org_id=caller.org_id)
            )
        )
        keys = Q(pk__in=[])
        for b in budgets:
            keys |= Q(budget_id=b.id, period_start=period_start(b.period, now))
        counters = list(BudgetCounter.objects.select_for_update().filter(keys).order_by("id"))
        by_budget = {c.budget_id: c for c in counters}
        for budget in budgets:
            counter = by_budget.get(budget.id)
            if counter and counter.spent_usd + counter.reserved_usd + amount > budget.cap_usd:
                return False
        BudgetCounter.objects.filter(pk__in=[c.pk for c in counters]).update(reserved_usd=F("reserved_usd") + amount)
        BudgetCounter.objects.filter(pk__in=[c.pk for c in counters]).update(reserved_usd=F("reserved_usd") - amount)
    return True


def stats(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "mean": statistics.fmean(ms),
    }


class PausableProxy:
    """TCP → Postgres unix socket. `pause()` stops forwarding in both directions: a hung server, as seen by clients."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.running = asyncio.Event()
        self.running.set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    async def close(self) -> None:
        self.resume()
        if self.server is not None:
            self.server.close()

    async def _handle(self, client_reader, client_writer):
        await self.running.wait()  # a new connection also hangs while paused
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.unix_path)
        except OSError:
            client_writer.close()
            return

        async def pipe(reader, writer):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    await self.running.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def measure_hot_path(callers, iterations: int) -> dict[str, dict[str, float]]:
    from asgiref.sync import sync_to_async

    from apps.budgets.services import reservation_settle
    from apps.gateway.context import RequestContext
    from apps.gateway.stages import budget_reserve, budget_settle
    from finops.asyncdb import get_pool

    pool = await get_pool()
    amount = Decimal("0.0012")
    floor, reserve, settle, orm_read, orm_reserve = [], [], [], [], []
    states = set()
    # Warm-up: prepared statements, plans, the ORM's connection.
    for i in range(200):
        await pool.fetchval("SELECT 1")
        ctx = RequestContext(endpoint="chat_completions", caller=callers[i % len(callers)])
        ctx.estimated_cost_usd = amount
        await budget_reserve(ctx)
        ctx.cost_usd = amount
        await budget_settle(ctx)
        await sync_to_async(orm_budget_read)(callers[0], amount)
        await sync_to_async(orm_budget_reserve)(callers[0], amount)
    # Two phases, not interleaved: a sync_to_async worker thread that is still finishing when the event loop
    # resumes makes the loop wait for the GIL (up to the 5 ms switch interval), which would bill the
    # baseline's cost to the asyncpg path.
    for i in tqdm(range(iterations), desc="asyncpg checks", unit="req"):
        caller = callers[i % len(callers)]
        t0 = time.perf_counter()
        await pool.fetchval("SELECT 1")
        t1 = time.perf_counter()
        ctx = RequestContext(endpoint="chat_completions", caller=caller)
        ctx.estimated_cost_usd = amount
        await budget_reserve(ctx)
        t2 = time.perf_counter()
        await reservation_settle(reservation_id=ctx.reservation_id, actual_usd=amount)
        t3 = time.perf_counter()
        states.add(ctx.budget_state)
        floor.append(t1 - t0)
        reserve.append(t2 - t1)
        settle.append(t3 - t2)
    for i in tqdm(range(iterations), desc="ORM baselines", unit="req"):
        caller = callers[i % len(callers)]
        t3 = time.perf_counter()
        await sync_to_async(orm_budget_read)(caller, amount)
        t4 = time.perf_counter()
        await sync_to_async(orm_budget_reserve)(caller, amount)
        t5 = time.perf_counter()
        orm_read.append(t4 - t3)
        orm_reserve.append(t5 - t4)
    assert states == {"ok"}, f"the bench must measure the database path, got {states}"
    return {
        "floor": stats(floor),
        "reserve": stats(reserve),
        "settle": stats(settle),
        "orm_read": stats(orm_read),
        "orm_reserve": stats(orm_reserve),
    }


async def measure_concurrent(callers, requests: int, concurrency: int) -> dict[str, float]:
    from apps.gateway.context import RequestContext
    from apps.gateway.stages import budget_reserve, budget_settle

    latencies: list[float] = []
    states: set[str] = set()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            ctx = RequestContext(endpoint="chat_completions", caller=callers[i % len(callers)])
            ctx.estimated_cost_usd = Decimal("0.0012")
            t0 = time.perf_counter()
            await budget_reserve(ctx)
            latencies.append(time.perf_counter() - t0)
            states.add(ctx.budget_state)
            ctx.cost_usd = Decimal("0.001")
            await budget_settle(ctx)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    result = stats(latencies)
    result["throughput"] = requests / elapsed
    result["fail_open"] = float("fail_open" in states)
    return result


async def measure_fail_open_lock(callers, decisions: int) -> dict[str, float]:
    from django.db import connection

    from apps.gateway.context import RequestContext
    from apps.gateway.stages import budget_reserve
    from finops.asyncdb import get_pool
    from finops.errors import RateLimited

    await get_pool()
    db = connection.settings_dict
    locker = psycopg.connect(dbname=db["NAME"], user=db["USER"] or None, host=db["HOST"] or None, port=db["PORT"] or None)
    latencies, states = [], set()
    try:
        locker.execute("LOCK TABLE budget_counters IN ACCESS EXCLUSIVE MODE")
        for i in tqdm(range(decisions), desc="fail-open (lock held)", unit="req"):
            ctx = RequestContext(endpoint="chat_completions", caller=callers[i % len(callers)])
            ctx.estimated_cost_usd = Decimal("0.0012")
            t0 = time.perf_counter()
            try:
                await budget_reserve(ctx)
            except RateLimited:
                pass
            latencies.append(time.perf_counter() - t0)
            states.add(ctx.budget_state)
    finally:
        locker.rollback()
        locker.close()
    assert states == {"fail_open"}, states
    return stats(latencies)


async def measure_fail_open_proxy(callers, decisions: int) -> dict[str, float]:
    from django.db import connection

    from apps.gateway.context import RequestContext
    from apps.gateway.stages import budget_reserve
    from finops.asyncdb import close_pools, get_pool
    from finops.errors import RateLimited

    db = connection.settings_dict
    unix_path = os.path.join(db["HOST"], f".s.PGSQL.{db['PORT'] or 5432}")
    proxy = PausableProxy(unix_path)
    port = await proxy.start()
    await close_pools()
    saved = db["HOST"], db["PORT"]
    db["HOST"], db["PORT"] = "127.0.0.1", str(port)
    latencies, states = [], set()
    try:
        await get_pool()  # connected through the proxy
        ok = RequestContext(endpoint="chat_completions", caller=callers[0])
        ok.estimated_cost_usd = Decimal("0.0012")
        await budget_reserve(ok)
        assert ok.budget_state == "ok", ok.budget_state
        proxy.pause()
        for i in tqdm(range(decisions), desc="fail-open (proxy paused)", unit="req"):
            ctx = RequestContext(endpoint="chat_completions", caller=callers[i % len(callers)])
            ctx.estimated_cost_usd = Decimal("0.0012")
            t0 = time.perf_counter()
            try:
                await budget_reserve(ctx)
            except RateLimited:
                pass
            latencies.append(time.perf_counter() - t0)
            states.add(ctx.budget_state)
    finally:
        proxy.resume()
        db["HOST"], db["PORT"] = saved
        from apps.budgets.services import background_drain

        await background_drain(timeout=10)
        await close_pools()
        await proxy.close()
    assert states == {"fail_open"}, states
    return stats(latencies)


def row(label: str, s: dict[str, float]) -> str:
    return f"| {label} | {s['n']} | {s['p50']:.3f} | {s['p95']:.3f} | {s['p99']:.3f} | {s['max']:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--skip-setup", action="store_true", help="reuse the bench database as it is")
    args = parser.parse_args()

    if not args.skip_setup:
        prepare_database()
    setup_django()
    from django.conf import settings

    from finops.limiter import local_window

    callers = tenants(args.users)
    local_window.clear()

    import uvloop

    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    # The latency distribution of the database path itself: a deadline that never cuts it short.
    # Replaced, not mutated in place: finops.conf.conf() rebuilds when the FINOPS dict is a new one.
    finops_settings = settings.FINOPS
    timeout_ms = finops_settings["BUDGET_TIMEOUT_MS"]
    settings.FINOPS = {**finops_settings, "BUDGET_TIMEOUT_MS": 5000}
    hot = uvloop.run(measure_hot_path(callers, args.iterations))
    concurrent = uvloop.run(measure_concurrent(callers, requests=4000, concurrency=64))
    settings.FINOPS = finops_settings
    lock = uvloop.run(measure_fail_open_lock(callers, args.decisions))
    hung = uvloop.run(measure_fail_open_proxy(callers, args.decisions))

    ratio_orm = hot["orm_read"]["p95"] / hot["reserve"]["p95"]
    md = f"""## Budgets: three-tier check on the hot path, and fail-open

`bench/bench_budgets.py`: user (daily), team and org (monthly) budgets on one caller, {args.users} users, a fresh
`{BENCH_DB}` database on the shared embedded Postgres (unix socket), uvloop, one process. Each iteration of the
first phase runs, in turn: `SELECT 1` on the asyncpg pool (the floor: one round trip), the `budget_reserve` hook
(one call of the SQL function: locks the three counters user → team → org, checks, reserves) and a settle of
that one reservation (the `budget_settle` hook itself only queues it: a per-loop batcher settles after the
response, hundreds per transaction under load). A second phase runs the ORM baselines through `sync_to_async`, as an async view would call
them (kept apart: a worker thread finishing while the loop resumes costs the loop up to the 5 ms GIL switch
interval). Latencies in ms; load average {load:.1f} on {os.cpu_count()} cores at the start of the run.

| path | n | p50 | p95 | p99 | max |
|---|---|---|---|---|---|
{row("floor: `SELECT 1` on the asyncpg pool", hot["floor"])}
{row("**reserve, asyncpg, three tiers** (`budget_reserve`)", hot["reserve"])}
{row("settle, asyncpg, one reservation (`budget_settle_many`)", hot["settle"])}
{row("baseline: sync ORM read of budgets + counters (deprecated, racy)", hot["orm_read"])}
{row("baseline: sync ORM reserve (same work: lock, check, update)", hot["orm_reserve"])}
{row(f"reserve under load: 64 concurrent, {concurrent['throughput']:.0f} checks/s", concurrent)}

- The 64-concurrent row (reserve through the hook, then the hook's batched settle) shares one org and one team
  counter across every request, so reserves queue on those two row locks (held only for the function's few
  statements: `synchronous_commit` is off inside it): throughput is the figure there, and latency is queueing.
- asyncpg reserve p95 **{hot["reserve"]["p95"]:.2f} ms** (target ≤ 2 ms; the original kit promised 8 ms):
  {hot["reserve"]["p95"] / hot["floor"]["p95"]:.1f}× a bare round trip, and the sync ORM read is {ratio_orm:.1f}× slower at p95
  while checking less (no lock, no reservation) — {hot["orm_reserve"]["p95"] / hot["reserve"]["p95"]:.1f}× for the same work.

Fail-open decision time with the database hanging (deadline `FINOPS_BUDGET_TIMEOUT_MS` = {timeout_ms} ms, covering
pool acquisition and the query; then the Redis sliding-window limiter):

| hang | n | p50 | p95 | p99 | max |
|---|---|---|---|---|---|
{row("lock held on `budget_counters` (server up, rows locked)", lock)}
{row("TCP proxy paused mid-connection (server unreachable)", hung)}

- Target ≤ 60 ms: worst case {max(lock["max"], hung["max"]):.1f} ms.
"""
    write_section("budgets", md)
    print(md)


if __name__ == "__main__":
    main()
