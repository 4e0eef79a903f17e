"""Reduced chaos scenarios (the full ones are `make chaos`, bench/chaos.py): a few seconds of load on a live gateway.

Redis stopped mid-load, and 30 % upstream failures with model="auto". Each served request must have its ledger row.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import free_port, gateway_server, wait_for_port

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
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
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
            for error in ("500", "429", "timeout"):
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
