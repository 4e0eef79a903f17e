"""The saturation scenario of bench/chaos.py: a healthy database and more load than 2 cores can serve.

The gateway's own CPU load must never turn into refusals that look like a database outage: no reservation fails
open (budget_state `fail_open`) and no request gets the fail-open limiter's 429 `budget_degraded_rate_limit`.
What the gateway cannot take it refuses explicitly, as 503 `overloaded` (apps.gateway.admission), counted apart.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout's packages

from bench.chaos_stack import Result, count_recorded, load, start_gateway  # noqa: E402
from finops.processes import free_port, stop_process  # noqa: E402


def scenario_saturation(ctx, args) -> Result:
    from django.db import connection

    from bench.chaos_scenarios import uvicorn_workers

    conns, seconds = args.saturation_concurrency, args.saturation
    result = Result(f"Saturation, healthy database: {conns} connections, 2 workers")
    port = free_port()
    # Straight to Postgres (not through the proxy): nothing is broken here but the CPU budget.
    gateway = start_gateway({**ctx["env"], "DATABASE_URL": ctx["database_url"]}, port, ctx["log"], workers=2)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while len(uvicorn_workers(gateway.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        asyncio.run(load(url, ctx["keys"], model="gpt-4o-mini", duration=5, concurrency=8, result=Result("warm-up")))
        started = time.time()
        result.fault = (0.0, seconds)  # the whole run is the "fault": the machine is saturated throughout
        asyncio.run(load(url, ctx["keys"], model="gpt-4o-mini", duration=seconds, concurrency=conns, result=result))
        ended = time.time()
    finally:
        stop_process(gateway)  # SIGTERM: the workers drain and record their rows
    count_recorded(result)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE budget_state = 'fail_open'), "
            "count(*) FILTER (WHERE error_code = 'budget_degraded_rate_limit') "
            "FROM llm_requests WHERE received_at >= to_timestamp(%s) AND received_at < to_timestamp(%s)",
            [started, ended],
        )
        rows, fail_open, degraded = cursor.fetchone()
    overloaded = sum(n for kind, n in result.failures.items() if kind == "503 overloaded")
    other = {kind: n for kind, n in result.failures.items() if kind != "503 overloaded"}
    answered = result.served + result.failed + result.throttled
    result.notes.append(
        f"{answered} answers in {result.duration_s:.0f} s ({result.served / result.duration_s:.0f} req/s answered 200), "
        f"{rows} rows received in the window: {fail_open} with budget_state=fail_open, {degraded} answered 429 "
        f"budget_degraded_rate_limit; {overloaded} shed as 503 overloaded; other non-200 answers: {other or 'none'}"
    )
    if fail_open or degraded:
        result.notes.append("FAIL: the gateway's own load turned into fail-open decisions or budget 429s")
    return result
