"""Reduced chaos scenarios (the full ones are `make chaos`, bench/chaos.py): a few seconds of load on a live gateway.

Redis stopped mid-load, and 30 % upstream failures (500, 429, timeout, malformed JSON) with model="auto": each served
request must have its ledger row. A Celery worker killed mid-rollup: a re-run gives exactly the right summaries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import free_port, gateway_server, wait_for_port
from finops.services import redis_spawn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@dataclass
class Load:
    served: list[str] = field(default_factory=list)  # request ids
    served_after_cut: int = 0
    throttled: int = 0  # 429 budget_degraded_rate_limit: the fail-open limiter, by design
    failed: dict[str, int] = field(default_factory=dict)


async def _load(url: str, secret: str, *, model: str, seconds: float, concurrency: int, cut_at=None, cut=None) -> Load:
    import aiohttp

    out = Load()
    started = time.monotonic()
    cut_done = asyncio.Event()

    async def worker(session) -> None:
        while time.monotonic() - started < seconds:
            body = {
                "model": model,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"quick chaos {uuid.uuid4().hex}"}],
            }
            try:
                async with session.post(
                    f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
                ) as r:
                    text = await r.text()
                    if r.status == 200:
                        out.served.append(r.headers["x-request-id"])
                        out.served_after_cut += cut_done.is_set()
                        continue
                    code = json.loads(text).get("error", {}).get("code", "") if text.startswith("{") else ""
                    if code == "budget_degraded_rate_limit":
                        out.throttled += 1
                    else:
                        out.failed[f"{r.status} {code}"] = out.failed.get(f"{r.status} {code}", 0) + 1
            except Exception as exc:
                out.failed[type(exc).__name__] = out.failed.get(type(exc).__name__, 0) + 1

    async def chaos() -> None:
        if cut is None:
            return
        await asyncio.sleep(cut_at)
        await asyncio.to_thread(cut)
        cut_done.set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        await asyncio.gather(chaos(), *(worker(session) for _ in range(concurrency)))
    return out


def _recorded(request_ids: list[str], *, settle_s: float = 15.0) -> tuple[int, int]:
    """(distinct served ids with a row, duplicate rows), once the gateway's async writer has caught up."""
    from django.db import connection

    deadline = time.monotonic() + settle_s
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(DISTINCT request_id) FROM llm_requests WHERE request_id::text = ANY(%s)", [request_ids]
            )
            rows, distinct = cursor.fetchone()
        if distinct >= len(request_ids) or time.monotonic() > deadline:
            return distinct, rows - distinct
        time.sleep(0.2)


def test_redis_stopped_mid_load_loses_nothing(make_tenant, prices, mock_llm_url, tmp_path):
    tenant = make_tenant(org="ChaosRedis", team="T", user="r")
    port = free_port()
    redis = redis_spawn(port)
    try:
        wait_for_port(port, proc=redis)
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path / "spool")}
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:

            def stop_redis():
                redis.terminate()
                redis.wait(timeout=10)

            load = asyncio.run(_load(url, tenant.secret, model="gpt-4o-mini", seconds=6, concurrency=8, cut_at=2, cut=stop_redis))
            recorded, duplicates = _recorded(load.served)
    finally:
        if redis.poll() is None:
            redis.terminate()
            redis.wait(timeout=10)
    assert load.failed == {}
    assert load.served_after_cut > 0  # still serving with Redis gone
    assert (recorded, duplicates) == (len(load.served), 0)  # lost = 0
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())  # Postgres took every row


def test_upstream_failures_at_30_percent_are_absorbed_by_the_fallback_chain(
    mock_llm_url, make_tenant, routing_defaults, tmp_path
):
    from apps.ledger.models import LLMRequest

    tenant = make_tenant(org="ChaosUpstream", team="T", user="u")
    mock = mock_llm_url.removesuffix("/v1")

    def faults(spec):
        method, data = ("DELETE", None) if spec is None else ("POST", json.dumps(spec).encode())
        req = urllib.request.Request(
            f"{mock}/_mock/faults", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=5).read()

    served: list[str] = []
    # A gateway of its own: the failures open gpt-4o-mini's (in-process) circuit breaker, which must not leak into
    # the shared gateway_url server other tests use.
    env = {"FINOPS_UPSTREAM_TIMEOUT_S": "2", "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path / "spool")}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        try:
            for error in ("500", "429", "timeout", "malformed"):
                faults({"gpt-4o-mini": {"error": error, "rate": 0.3}})
                load = asyncio.run(_load(url, tenant.secret, model="auto", seconds=2, concurrency=6))
                # Only upstream failures are injected: none may reach the client. (A budget fail-open under CPU load
                # can still throttle a request by design; that is the budgets' business, not the fallback chain's.)
                assert load.failed == {}, (error, load.failed)
                served += load.served
        finally:
            faults(None)
    recorded, duplicates = _recorded(served)
    assert (recorded, duplicates) == (len(served), 0)
    rows = LLMRequest.objects.filter(request_id__in=served)
    assert rows.filter(status="served").count() == len(served)
    assert rows.exclude(fallback_from="").count() > 0  # the chain did the absorbing


# --- a Celery worker killed mid-rollup ---------------------------------------------------------------------------

SUMMARY_VALUES = ("org_id", "team_id", "requests", "errors", "cache_hits", "fail_open", "prompt_tokens",
                  "completion_tokens", "cached_tokens", "cost_usd", "saved_usd")  # fmt: skip


def _detail_rows(tenants, days, *, per_day: int, seed: int) -> None:
    import random
    from decimal import Decimal

    from apps.ledger.models import LLMRequest

    rng = random.Random(seed)
    rows = []
    for day in days:
        start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        for _ in range(per_day):
            tenant = rng.choice(tenants)
            status = rng.choice(["served", "served", "served", "cached", "failed"])
            rows.append(LLMRequest(
                request_id=uuid.uuid4(), endpoint=rng.choice(["chat", "chat_completions"]),
                received_at=start + dt.timedelta(seconds=rng.randrange(86_400)), org=tenant.org, team=tenant.team,
                member=tenant.member, api_key=tenant.api_key, status=status, model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
                cache_status="exact" if status == "cached" else "miss",
                budget_state=rng.choice(["ok", "ok", "fail_open"]), prompt_tokens=rng.randrange(50, 4000),
                completion_tokens=rng.randrange(0, 800), cached_tokens=rng.randrange(0, 50),
                cost_usd=Decimal(rng.randrange(10**9)).scaleb(-10), saved_usd=Decimal(rng.randrange(10**7)).scaleb(-10),
            ))  # fmt: skip
    LLMRequest.objects.bulk_create(rows)


def _summaries() -> dict:
    from apps.ledger.models import CostDailySummary

    return {
        (s["date"], s["model"], s["endpoint"], s["user_id"]): tuple(s[v] for v in SUMMARY_VALUES)
        for s in CostDailySummary.objects.values("date", "model", "endpoint", "user_id", *SUMMARY_VALUES)
    }


def _fresh_from_detail_rows() -> dict:
    """The summaries computed here, in Python with Decimal, from the detail rows: independent of the rollup's SQL."""
    from decimal import Decimal

    from apps.ledger.models import LLMRequest

    out: dict = {}
    for r in LLMRequest.objects.values():
        key = (r["received_at"].astimezone(dt.UTC).date(), r["model"], r["endpoint"], r["member_id"])
        acc = out.setdefault(key, [r["org_id"], r["team_id"], 0, 0, 0, 0, 0, 0, 0, Decimal(0), Decimal(0)])
        acc[2] += 1
        acc[3] += r["status"] in ("rejected", "failed")
        acc[4] += r["cache_status"] in ("exact", "semantic")
        acc[5] += r["budget_state"] == "fail_open"
        for i, column in enumerate(("prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "saved_usd"), 6):
            acc[i] += r[column]
    return {key: tuple(acc) for key, acc in out.items()}


def _rollup_backends(cursor) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT state, coalesce(wait_event_type, '') FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query LIKE '%%WITH fresh AS (%%' AND state = 'active'"  # ROLLUP_SQL
    )
    return cursor.fetchall()


def test_a_celery_worker_killed_mid_rollup_then_a_rerun_gives_exact_summaries(make_tenant, subprocess_env, redis_client):
    import signal
    import sys

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from apps.ledger.services import cost_rollup
    from conftest import ROOT, test_database_url
    from finops.celery import app

    tenants = [make_tenant(org="ChaosRollup", team="T", user=name) for name in ("ann", "ben", "cy")]
    days = [timezone.now().date() - dt.timedelta(days=7 - i) for i in range(6)]
    _detail_rows(tenants, days, per_day=40, seed=1)
    cost_rollup(since=days[0], until=days[-1])
    _detail_rows(tenants, days, per_day=15, seed=2)  # late rows on every day: every summary is now stale
    fresh = _fresh_from_detail_rows()
    assert _summaries() != fresh

    def worker() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "finops", "worker", "--pool", "solo", "-l", "warning",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"rollup-{uuid.uuid4().hex[:8]}@localhost"],
            cwd=ROOT, env=subprocess_env,
        )  # fmt: skip

    task, span = "apps.ledger.tasks.cost_rollup_days_task", [days[0].isoformat(), days[-1].isoformat()]
    # Another session holds day 4's summary rows: the worker rewrites days 1-3, then waits on day 4 — mid-rollup.
    blocker = psycopg.connect(test_database_url())
    blocker.execute("SELECT 1 FROM cost_daily_summary WHERE date = %s FOR UPDATE", [days[3]])
    first = worker()
    try:
        app.send_task(task, args=span)
        deadline = time.monotonic() + 60
        with connection.cursor() as cursor:
            while ("active", "Lock") not in _rollup_backends(cursor):
                assert time.monotonic() < deadline and first.poll() is None, "the rollup never reached day 4"
                time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        first.kill()
        blocker.rollback()  # the dead worker's last statement may still finish on its own: one whole day, or nothing
        blocker.close()
    with connection.cursor() as cursor:
        deadline = time.monotonic() + 30
        while _rollup_backends(cursor) and time.monotonic() < deadline:
            time.sleep(0.1)
    after_kill = _summaries()
    stale_days = {key[0] for key, values in fresh.items() if after_kill.get(key) != values}
    # Days 1-3 rewritten, 5-6 never reached. Day 4 is whole either way: its statement ran to the end once the lock was
    # released (Postgres notices a dead client only when it next talks to it), or it rolled back.
    assert set(days[4:]) <= stale_days <= set(days[3:])

    second = worker()
    try:
        assert app.send_task(task, args=span).get(timeout=60) > 0
    finally:
        second.terminate()
        second.wait(timeout=20)
    assert _summaries() == fresh  # every key, every count, every Decimal
