"""The admin dashboard with its rollup aggregates cached in Redis (django-redis) against recomputed every time,
on the 1.5M-row reference month; and what cached_db sessions save on every admin request.

Django's test Client in this process against `finops_bench`, as bench_reports.py: server time = middleware +
session + queries + template, no network. "Cold" deletes the dashboard's cache entries before each request (what
the first request after a rollup pays); "warm" is every other request until the next rollup.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.refdb import bench_database_url, ensure_reference_month, manage  # noqa: E402
from evals.report import percentile, write_section  # noqa: E402

RUNS = int(os.environ.get("BENCH_DASHBOARD_RUNS", "30"))


def main() -> None:
    ensure_reference_month()
    manage("migrate", "--noinput", "-v", "0")
    os.environ["DATABASE_URL"] = bench_database_url()
    os.environ["DJANGO_SETTINGS_MODULE"] = "finops.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    from apps.ledger.models import LLMRequest
    from apps.reports.periods import current_month
    from apps.reports.services import finance_group_reporting_ensure

    rows = LLMRequest.objects.count()
    users = get_user_model()
    superuser, _ = users.objects.get_or_create(username="bench_reports", defaults={"is_staff": True, "is_superuser": True})
    finance, _ = users.objects.get_or_create(username="bench_finance", defaults={"is_staff": True})
    finance.groups.add(finance_group_reporting_ensure())
    org_id = LLMRequest.objects.filter(received_at__gte=current_month().start_at).values_list("org_id", flat=True).first()
    org_id = org_id or LLMRequest.objects.values_list("org_id", flat=True).first()

    def measure(client: Client, url: str, *, cold: bool) -> tuple[float, float, float, int]:
        times, sql, queries = [], [], 0
        for _ in range(RUNS):
            if cold:
                cache.delete_pattern("*reports:dashboard:*")
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
            sql.append(sum(float(q["time"]) for q in ctx.captured_queries) * 1000)
            queries = len(ctx.captured_queries)
        return percentile(times, 50), percentile(times, 95), statistics.median(sql), queries

    pages = [
        ("Admin home (cost dashboard), superuser", superuser, "/admin/"),
        ("Admin home, finance user", finance, "/admin/"),
        ("Org dashboard (`admin/reports/org/<id>/`)", finance, f"/admin/reports/org/{org_id}/"),
    ]
    results = []
    for label, user, url in pages:
        client = Client()
        client.force_login(user)
        client.get(url)  # imports, templates, connection
        cold = measure(client, url, cold=True)
        warm = measure(client, url, cold=False)
        results.append((label, cold, warm))
        print(f"{label}: cold p50 {cold[0]:.1f} ms ({cold[3]} queries), warm p50 {warm[0]:.1f} ms ({warm[3]} queries)")

    session_rows = []
    for engine in ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"):
        with override_settings(SESSION_ENGINE=engine):
            client = Client()
            client.force_login(finance)
            client.get("/admin/")
            p50, p95, sql_ms, queries = measure(client, "/admin/", cold=False)
            session_rows.append((engine.rsplit(".", 1)[1], p50, p95, sql_ms, queries))
            print(f"sessions {engine}: p50 {p50:.1f} ms, {queries} queries")

    table = "\n".join(
        f"| {label} | {c[0]:.1f} | {c[2]:.1f} | {c[3]} | {w[0]:.1f} | {w[2]:.1f} | {w[3]} | {c[0] / w[0]:.1f}× |"
        for label, c, w in results
    )
    sessions = "\n".join(
        f"| `{name}` | {p50:.1f} | {p95:.1f} | {sql_ms:.1f} | {q} |" for name, p50, p95, sql_ms, q in session_rows
    )
    md = f"""## Reports: the dashboard with a warm cache (django-redis)

`bench/bench_dashboard_cache.py` on `finops_bench` ({rows:,} llm_requests rows; current month {current_month().label}).
Django's test Client in-process, {RUNS} requests per page and state: server time = middleware + session +
queries + template, no network. **Cold**: the dashboard's cache entries are deleted before each request (the
first request after a rollup). **Warm**: the month's spend overview and routing figures come from Redis
(`apps.reports.selectors.dashboard_aggregates`); budgets, burn-down and open anomalies are still read live.

| page | cold p50 ms | cold SQL ms | cold queries | warm p50 ms | warm SQL ms | warm queries | cold / warm |
|---|---:|---:|---:|---:|---:|---:|---:|
{table}

Sessions: the finance user's admin home, warm dashboard, by session engine (every admin request reads the session):

| `SESSION_ENGINE` | p50 ms | p95 ms | SQL ms | queries |
|---|---:|---:|---:|---:|
{sessions}
"""
    write_section("dashboard-cache", md)
    print(md)


if __name__ == "__main__":
    main()
