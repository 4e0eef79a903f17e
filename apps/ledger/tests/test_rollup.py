"""The hourly rollup: idempotent, safe when concurrent, picks up late rows, runs on a real Celery worker."""

import datetime as dt
import subprocess
import sys
import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connections
from django.utils import timezone

from apps.ledger.models import CostDailySummary, LLMRequest
from apps.ledger.services import cost_rollup, cost_rollup_hourly
from conftest import ROOT

SUMMARY_FIELDS = [
    "date", "model", "endpoint", "user_id", "org_id", "team_id", "requests", "errors", "cache_hits", "fail_open",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "saved_usd",
]  # fmt: skip


def summary_rows():
    return list(CostDailySummary.objects.order_by("date", "model", "endpoint", "user_id").values_list(*SUMMARY_FIELDS))


def add_request(tenant, *, at, model="gpt-4o", cost="0.0100000000", saved="0", status="served", cache_status="miss", endpoint="chat"):
    return LLMRequest.objects.create(
        request_id=uuid.uuid4(),
        endpoint=endpoint,
        received_at=at,
        org=tenant.org,
        team=tenant.team,
        member=tenant.member,
        api_key=tenant.api_key,
        status=status,
        model=model,
        prompt_tokens=100,
        completion_tokens=20,
        cached_tokens=10,
        cost_usd=Decimal(cost),
        saved_usd=Decimal(saved),
        cache_status=cache_status,
    )


@pytest.fixture
def workload(make_tenant):
    alice = make_tenant()
    bob = make_tenant(org="Globex", team="Risk", user="bob")
    now = timezone.now()
    yesterday = now - dt.timedelta(days=1)
    add_request(alice, at=now, cost="0.0123456789")
    add_request(alice, at=now, cost="0.0000000001", model="gpt-4o-mini")
    add_request(alice, at=yesterday, cost="0.5000000000")
    add_request(bob, at=now, cost="0", saved="0.0200000000", status="cached", cache_status="exact")
    add_request(bob, at=now, cost="0", status="failed")
    return alice, bob


def test_summaries_match_the_detail_rows(workload):
    cost_rollup_hourly()
    rows = CostDailySummary.objects.all()
    assert rows.count() == 4  # (today, gpt-4o, alice), (today, mini, alice), (yesterday, gpt-4o, alice), (today, gpt-4o, bob)
    detail_cost = sum(LLMRequest.objects.values_list("cost_usd", flat=True))
    assert sum(r.cost_usd for r in rows) == detail_cost == Decimal("0.5123456790")
    bob_row = rows.get(user=workload[1].member)
    assert (bob_row.requests, bob_row.errors, bob_row.cache_hits, bob_row.saved_usd) == (2, 1, 1, Decimal("0.02"))


def test_running_it_twice_gives_identical_rows(workload):
    cost_rollup_hourly()
    first = summary_rows()
    stamps = list(CostDailySummary.objects.order_by("id").values_list("updated_at", flat=True))
    written = cost_rollup_hourly()
    assert summary_rows() == first
    assert written == 0  # a no-op re-run writes nothing
    assert list(CostDailySummary.objects.order_by("id").values_list("updated_at", flat=True)) == stamps


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_rollups_give_identical_rows(make_tenant):
    alice = make_tenant()
    now = timezone.now()
    for i in range(50):
        add_request(alice, at=now - dt.timedelta(minutes=i), cost=f"0.00{i:02d}000000", model=["gpt-4o", "gpt-4o-mini"][i % 2])
    cost_rollup_hourly()
    expected = summary_rows()
    CostDailySummary.objects.all().delete()

    barrier = threading.Barrier(2)
    errors = []

    def run():
        try:
            barrier.wait()
            cost_rollup_hourly()
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert summary_rows() == expected


def test_a_late_row_for_yesterday_updates_yesterdays_summary(workload):
    alice, _ = workload
    cost_rollup_hourly()
    yesterday = (timezone.now() - dt.timedelta(days=1)).date()
    before = CostDailySummary.objects.get(date=yesterday, user=alice.member, model="gpt-4o")
    add_request(alice, at=timezone.now() - dt.timedelta(days=1), cost="0.2500000000")
    cost_rollup_hourly()
    after = CostDailySummary.objects.get(pk=before.pk)
    assert (after.requests, after.cost_usd) == (before.requests + 1, before.cost_usd + Decimal("0.25"))


def test_backfill_covers_older_days_and_prunes_vanished_keys(workload):
    alice, _ = workload
    old = timezone.now() - dt.timedelta(days=10)
    row = add_request(alice, at=old, cost="1.0000000000", model="claude-sonnet-4-20250514")
    cost_rollup(since=old.date(), until=timezone.now().date())
    assert CostDailySummary.objects.filter(date=old.date(), model="claude-sonnet-4-20250514").exists()
    row.delete()
    cost_rollup(since=old.date(), until=old.date())
    assert not CostDailySummary.objects.filter(date=old.date()).exists()


def test_the_rollup_commands_cover_all_days_from_the_first_request(workload):
    """`rollup_costs --all` and `rollup_routes --all` (one shared base command) backfill every day in the ledger."""
    from io import StringIO

    from django.core.management import call_command

    from apps.reports.models import RouteDailySummary

    alice, _ = workload
    old = timezone.now() - dt.timedelta(days=5)
    add_request(alice, at=old, cost="1.0000000000")
    out = StringIO()
    call_command("rollup_costs", "--all", stdout=out)
    assert "rolled up 6 day(s)" in out.getvalue()
    assert sum(r.cost_usd for r in CostDailySummary.objects.all()) == Decimal("1.5123456790")
    assert CostDailySummary.objects.filter(date=old.date()).exists()

    out = StringIO()
    call_command("rollup_routes", "--all", stdout=out)
    assert "rolled up 6 day(s)" in out.getvalue()
    assert RouteDailySummary.objects.filter(date=old.date()).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_runs_the_beat_task(make_tenant, subprocess_env, redis_client, settings):
    from finops.celery import app

    alice = make_tenant()
    add_request(alice, at=timezone.now(), cost="0.0420000000")
    assert "ledger-rollup-hourly" in settings.CELERY_BEAT_SCHEDULE
    entry = settings.CELERY_BEAT_SCHEDULE["ledger-rollup-hourly"]

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "finops", "worker", "--pool", "solo", "-l", "warning", "--without-heartbeat",
         "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=subprocess_env,
    )  # fmt: skip
    try:
        result = app.send_task(entry["task"], **entry.get("options", {}))
        written = result.get(timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert written == 1
    summary = CostDailySummary.objects.get(user=alice.member)
    assert summary.cost_usd == Decimal("0.042")
    from finops.models import JobRun

    assert JobRun.objects.get(name="cost_rollup_hourly").successes == 1


def test_the_rollup_is_one_statement(workload, django_assert_num_queries):
    with django_assert_num_queries(1):
        cost_rollup(since=timezone.now().date(), until=timezone.now().date())


def test_late_rows_reach_the_rollup_for_every_day_that_received_them(workload):
    """Rows replayed after an outage that lasted past yesterday: the next hourly run recomputes their days (found by
    recorded_at since its last run), in the cost and the route summaries, and leaves the other days alone."""
    from apps.ledger.models import RollupWatermark
    from apps.reports.models import RouteDailySummary
    from apps.reports.services import route_rollup_hourly

    alice, _ = workload
    cost_rollup_hourly()
    route_rollup_hourly()
    first_mark = RollupWatermark.objects.get(name="cost_daily_summary").recorded_through
    untouched = summary_rows()
    ten_days_ago, five_days_ago = timezone.now() - dt.timedelta(days=10), timezone.now() - dt.timedelta(days=5)
    add_request(alice, at=ten_days_ago, cost="0.2500000000")
    add_request(alice, at=ten_days_ago, cost="0.0500000000")
    add_request(alice, at=five_days_ago, cost="1.0000000000", model="gpt-4o-mini")

    cost_rollup_hourly()
    route_rollup_hourly()

    late = CostDailySummary.objects.get(date=ten_days_ago.date(), user=alice.member, model="gpt-4o")
    assert (late.requests, late.cost_usd) == (2, Decimal("0.3000000000"))
    other = CostDailySummary.objects.get(date=five_days_ago.date(), user=alice.member, model="gpt-4o-mini")
    assert (other.requests, other.cost_usd) == (1, Decimal("1.0000000000"))
    assert [r for r in summary_rows() if r[0] not in (ten_days_ago.date(), five_days_ago.date())] == untouched
    assert RouteDailySummary.objects.filter(date=ten_days_ago.date()).exists()
    assert RollupWatermark.objects.get(name="cost_daily_summary").recorded_through >= first_mark  # never moves back

    # A run with nothing new rewrites nothing.
    assert cost_rollup_hourly() == 0
