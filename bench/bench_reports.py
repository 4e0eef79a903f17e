"""Finance UI server time on the 1.5M-row reference month (target: dashboard and ledger list ≤ 300 ms each).

Runs Django's test Client in this process against the `finops_bench` database, so the time is the
whole server side of a request (middleware, session, queries, template) without the network. The
reports' own rollup (route_daily_summary) is brought up to date first and timed too, as are the
month-long exports that read llm_requests (FOCUS, route report).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.refdb import bench_database_url, ensure_reference_month, manage  # noqa: E402
from evals.report import percentile, write_section  # noqa: E402

RUNS = int(os.environ.get("BENCH_REPORTS_RUNS", "20"))
TARGET_MS = 300


def main() -> None:
    ensure_reference_month()  # never fresh=True: the seeded month is shared with the other benchmarks
    manage("migrate", "--noinput", "-v", "0")  # the reports tables, if the month predates them
    os.environ["DATABASE_URL"] = bench_database_url()
    os.environ["DJANGO_SETTINGS_MODULE"] = "finops.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Max, Min
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from apps.ledger.models import LLMRequest
    from apps.reports.periods import current_month, month_of
    from apps.reports.services import cost_report, focus_export, route_rollup

    span = LLMRequest.objects.aggregate(first=Min("received_at"), last=Max("received_at"), n=Max("id"))
    rows = LLMRequest.objects.count()
    first, last = span["first"].date(), span["last"].date()

    started = time.monotonic()
    route_rollup(since=first, until=last)
    route_rollup_s = time.monotonic() - started

    users = get_user_model()
    superuser, _ = users.objects.get_or_create(username="bench_reports", defaults={"is_staff": True, "is_superuser": True})
    finance, _ = users.objects.get_or_create(username="bench_finance", defaults={"is_staff": True})
    from apps.reports.services import finance_group_reporting_ensure

    finance.groups.add(finance_group_reporting_ensure())
    busiest = max({month_of(first), month_of(last)}, key=lambda m: LLMRequest.objects.filter(
        received_at__gte=m.start_at, received_at__lt=m.end_at).count())  # fmt: skip
    # (label, user, url, held to the 300 ms target)
    pages = [
        ("Admin home (cost dashboard), superuser, current month", superuser, "/admin/", True),
        ("Admin home, finance user", finance, "/admin/", True),
        (f"Admin home, `?month={busiest.label}` (busiest month)", finance, f"/admin/?month={busiest.label}", True),
        ("Org dashboard (`admin/reports/org/<id>/`)", finance, "/admin/reports/org/{org}/", True),
        ("Ledger list, default (last 24 h)", finance, "/admin/ledger/llmrequest/", True),
        (
            "Ledger list, one day + one org",
            finance,
            f"/admin/ledger/llmrequest/?day={last.isoformat()}&org__id__exact={{org}}",
            True,
        ),
        ("Ledger list, last 7 days (a wider window sorts more rows)", finance, "/admin/ledger/llmrequest/?received=7d", False),
        ("API keys list (spend this month per key)", finance, "/admin/tenancy/apikey/", False),
    ]
    org_id = LLMRequest.objects.filter(received_at__gte=busiest.start_at).values_list("org_id", flat=True).first()
    results = []
    for label, user, url, held in pages:
        url = url.format(org=org_id)
        client = Client()
        client.force_login(user)
        response = client.get(url)  # warm: imports, template compilation, connection
        assert response.status_code == 200, (url, response.status_code)
        times, sql, queries = [], [], 0
        for _ in range(RUNS):
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
            sql.append(sum(float(q["time"]) for q in ctx.captured_queries) * 1000)
            queries = len(ctx.captured_queries)
        results.append((label, percentile(times, 50), percentile(times, 95), statistics.median(sql), queries, held))
        print(
            f"{label}: p50 {results[-1][1]:.0f} ms, p95 {results[-1][2]:.0f} ms, SQL {results[-1][3]:.0f} ms, {queries} queries"
        )

    month = busiest
    started = time.monotonic()
    out = io.StringIO()
    focus = focus_export(month=month, out=out)
    focus_s = time.monotonic() - started
    started = time.monotonic()
    cost_report(by="route", month=month)
    route_report_s = time.monotonic() - started
    month_rows = LLMRequest.objects.filter(received_at__gte=month.start_at, received_at__lt=month.end_at).count()

    table = "\n".join(
        f"| {label} | {p50:.0f} | {p95:.0f} | {sql_ms:.0f} | {queries} | "
        f"{('yes' if p50 <= TARGET_MS else '**no**') if held else '(no target)'} |"
        for label, p50, p95, sql_ms, queries, held in results
    )
    md = f"""## Reports: finance UI server time (reference month)

`bench/bench_reports.py` on `finops_bench` ({rows:,} llm_requests rows, {first} to {last}; current month
{current_month().label}). Django's test Client in-process, {RUNS} requests per page after one warm-up:
server time = middleware + session + queries + template, no network. "SQL" is the median time the
page spent in the database. Target ≤ {TARGET_MS} ms each for the dashboard and the ledger list.

| page | p50 ms | p95 ms | SQL ms | queries | p50 ≤ {TARGET_MS} ms |
|---|---:|---:|---:|---:|---|
{table}

The dashboard reads only the rollups (`cost_daily_summary`: one GROUPING SETS scan for two months;
`route_daily_summary` for routing savings), so its cost does not grow with the detail rows. The ledger
list is bounded by time (default: last 24 h; BRIN on received_at), counts at most 10,000 rows, and
fetches names by prefetch rather than joining every row of the window before the sort. Wider windows
("last 7 days", "this month") sort every row of the window for the newest 50: llm_requests has only a
BRIN index on received_at, which bounds a scan but cannot return rows in order; a btree on received_at
(or monthly partitions) would make any window as fast as the default one.

Month-long jobs on {month.label} ({month_rows:,} rows), which read llm_requests one day per query:

| job | seconds |
|---|---:|
| `route_rollup` over the whole span ({first} to {last}) | {route_rollup_s:.1f} |
| `export_focus --month {month.label}` ({focus.rows:,} FOCUS rows; BilledCost {focus.billed_cost} = ledger {focus.ledger_cost}) | {focus_s:.1f} |
| `cost_report --by route --month {month.label}` | {route_report_s:.1f} |
"""
    write_section("reports", md)
    print(md)


if __name__ == "__main__":
    main()
