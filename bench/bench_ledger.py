"""Seed time of the 1.5M-row reference month and rollup times (targets: seed ≤ 60 s, full rollup ≤ 10 s, hourly ≤ 1 s)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.refdb import REFERENCE_DAYS, REFERENCE_PER_DAY, bench_database_url, ensure_reference_month  # noqa: E402
from evals.report import write_section  # noqa: E402


def main() -> None:
    seed_seconds = ensure_reference_month(fresh=True)
    os.environ["DATABASE_URL"] = bench_database_url()
    os.environ["DJANGO_SETTINGS_MODULE"] = "finops.settings"
    import django

    django.setup()
    import datetime as dt

    from django.db import connection
    from django.db.models import Max, Min

    from apps.ledger.models import LLMRequest
    from apps.ledger.services import cost_rollup, cost_rollup_hourly

    span = LLMRequest.objects.aggregate(first=Min("received_at"), last=Max("received_at"))
    rows = LLMRequest.objects.count()
    first, last = span["first"].date(), span["last"].date()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE cost_daily_summary")
    full = []
    for _ in range(3):
        started = time.monotonic()
        cost_rollup(since=first, until=last)
        full.append(time.monotonic() - started)
    hourly = []
    for _ in range(5):
        started = time.monotonic()
        cost_rollup_hourly()
        hourly.append(time.monotonic() - started)
    # The hourly job on the reference month's last two days (today has no seeded rows).
    two_days = []
    for _ in range(5):
        started = time.monotonic()
        cost_rollup(since=last - dt.timedelta(days=1), until=last)
        two_days.append(time.monotonic() - started)
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(cost_usd) FROM llm_requests")
        detail = cursor.fetchone()[0]
        cursor.execute("SELECT sum(cost_usd) FROM cost_daily_summary")
        summary = cursor.fetchone()[0]
    md = f"""## Ledger: seed and rollup (reference month)

`bench/bench_ledger.py` seeds `seed_demo --per-day {REFERENCE_PER_DAY} --days {REFERENCE_DAYS}` into a fresh
`finops_bench` database (COPY, numpy-generated columns), then times `cost_rollup` (one
`INSERT … SELECT … ON CONFLICT DO UPDATE`) over the whole month and over the two days the hourly job rewrites.

| figure | measured | target |
|---|---|---|
| rows in `llm_requests` | {rows:,} | 1.5M |
| seed time, reference month (incl. rollup) | {seed_seconds:.1f} s | ≤ 60 s |
| full rollup, {(last - first).days + 1} days, first run / re-run (median of 3) | {full[0]:.2f} s / {sorted(full)[1]:.2f} s | ≤ 10 s |
| hourly rollup: 2 busy days (~100k rows), median of 5 | {sorted(two_days)[2]:.3f} s | ≤ 1 s |
| summary total = detail total | {summary} = {detail} ({'equal' if summary == detail else 'DIFFERENT'}) | equal |
"""
    write_section("ledger", md)
    print(md)


if __name__ == "__main__":
    main()
