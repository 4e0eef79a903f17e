"""Anomaly scan time on the reference month (1.5M ledger rows, `seed_demo --per-day 50000 --days 30`).

Uses the benchmark database of evals/refdb.py (FINOPS_BENCH_DB, default finops_bench): seeds it when it does
not already hold the month, migrates it, then times `anomaly_scan` (one SQL query over the 29-day look-back,
numpy detection, upserts) against the last hour of the data. The direct comparison is the bare aggregate
query alone, measured in the same run. Writes the `anomalies` section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals import refdb  # noqa: E402

RUNS = 5


def main() -> None:
    seeded = refdb.ensure_reference_month()
    refdb.manage("migrate", "--noinput", "-v", "0")
    os.environ["DATABASE_URL"] = refdb.bench_database_url()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    import django

    django.setup()
    import datetime as dt

    from apps.anomalies import services
    from apps.anomalies.models import Anomaly
    from apps.anomalies.selectors import hourly_series
    from apps.ledger.models import LLMRequest
    from evals.report import write_section
    from finops.conf import conf

    last = LLMRequest.objects.order_by("-received_at").values_list("received_at", flat=True).first()
    rows = LLMRequest.objects.count()
    now = last.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1, minutes=12)
    end = now.replace(minute=0)
    start = end - dt.timedelta(hours=int(conf().anomaly_lookback_hours))
    Anomaly.objects.all().delete()

    query_s, scan_s, results = [], [], []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        series = hourly_series(start=start, end=end)
        query_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        results.append(services.anomaly_scan(now=now))
        scan_s.append(time.perf_counter() - t0)
    scan_p50, query_p50 = statistics.median(scan_s), statistics.median(query_s)
    first, again = results[0], results[-1]
    md = f"""## Anomaly scan (apps/anomalies)

Reference month: {rows:,} rows in `llm_requests` ({"seeded in " + format(seeded, ".0f") + " s for this run" if seeded else "already seeded"}).
One hourly scan = one aggregate query over the {conf().anomaly_lookback_hours} h look-back (GROUPING SETS org / team / model,
generate_series-filled) + numpy detectors on {len(series)} scopes × 3 metrics + upserts. Median of {RUNS} runs.

| step | p50 | min | max |
|---|---|---|---|
| the aggregate query alone (direct) | {query_p50:.2f} s | {min(query_s):.2f} s | {max(query_s):.2f} s |
| full `anomaly_scan` | **{scan_p50:.2f} s** | {min(scan_s):.2f} s | {max(scan_s):.2f} s |
| scan / query | {scan_p50 / query_p50:.2f}× | | |

Target ≤ 5 s: {"met" if scan_p50 <= 5 else "**not met**"}. First run: {first}. Re-run: {again.created} created, {again.updated} updated (idempotent).
"""
    write_section("anomalies", md)
    print(md)


if __name__ == "__main__":
    main()
