"""seed_demo: enough rows, deterministic, exact costs, summaries equal to the detail, labelled incidents."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Sum

from apps.ledger.models import CostDailySummary, LLMRequest, SeedIncident
from apps.ledger.pricing import Price, cost_compute
from apps.tenancy.models import ApiKey, Member, Organization

END = dt.date(2026, 11, 1)
DOCS_SQL = Path(__file__).resolve().parents[2] / "docs" / "sql"


@pytest.fixture(scope="module")
def seeded_once(django_db_setup, django_db_blocker, tmp_path_factory):
    """Seed once for the module (committed), and clean up after it so other modules start empty."""
    key_file = tmp_path_factory.mktemp("seed") / "key"
    with django_db_blocker.unblock():
        call_command("seed_demo", "--end", END.isoformat(), "--demo-key-file", str(key_file))
        yield key_file
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE llm_requests, cost_daily_summary, seed_incidents, budgets, tenancy_apikey, tenancy_member, "
                "tenancy_team, tenancy_organization, model_prices CASCADE"
            )


@pytest.fixture
def seeded(seeded_once, db):
    return seeded_once


def test_it_seeds_the_reference_tenancy_and_at_least_11000_rows(seeded):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM llm_requests")
        assert cursor.fetchone()[0] >= 11_000
    assert Organization.objects.count() == 8
    assert Member.objects.count() >= 8 * 2 * 3
    assert seeded.read_text().startswith("fo-")
    # Every API key is stored hashed; the demo secret itself is nowhere in the database.
    assert not ApiKey.objects.filter(key_hash=seeded.read_text().strip()).exists()


def test_it_seeds_budgets_at_every_level(seeded):
    from apps.budgets.models import Budget

    assert set(Budget.objects.values_list("scope", flat=True)) == {"org", "team", "user"}
    assert Budget.objects.filter(scope="org").count() == 8
    assert all(b.changes.exists() for b in Budget.objects.all())  # created through the history-keeping service


def test_summary_totals_equal_the_detail_to_the_last_decimal(seeded):
    detail = LLMRequest.objects.aggregate(cost=Sum("cost_usd"), saved=Sum("saved_usd"), n=Count("id"))
    summary = CostDailySummary.objects.aggregate(cost=Sum("cost_usd"), saved=Sum("saved_usd"), n=Sum("requests"))
    assert detail == summary
    assert detail["cost"] > Decimal("10")


def test_every_cost_traces_to_tokens_and_a_dated_price_row(seeded):
    rows = LLMRequest.objects.filter(status="served").select_related("price")
    assert rows.filter(price__isnull=True).count() == 0
    for row in rows.order_by("?")[:500]:
        cost = cost_compute(
            price=Price.from_row(row.price),
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cached_tokens=row.cached_tokens,
        )
        assert row.cost_usd == cost + row.escalation_cost_usd
        assert row.price.effective_from <= row.received_at.date()


def test_patterns_diurnal_weekly_cache_and_routes(seeded):
    rows = LLMRequest.objects.all()
    by_hour = dict(
        rows.extra(select={"h": "extract(hour from received_at)"}).values_list("h").annotate(n=Count("id")).values_list("h", "n")
    )
    assert by_hour[15] > 3 * by_hour[3]  # afternoon peak, quiet night
    weekday = rows.filter(received_at__week_day__in=[2, 3, 4, 5, 6]).count() / 5
    weekend = rows.filter(received_at__week_day__in=[1, 7]).count() / 2
    assert weekday > 2 * weekend
    assert rows.filter(cache_status="exact").exists() and rows.filter(cache_status="semantic").exists()
    assert set(rows.values_list("route_strategy", flat=True)) >= {"pinned", "keyword", "complexity", "confidence"}
    assert rows.filter(cache_status__in=["exact", "semantic"], cost_usd=0, saved_usd__gt=0).count() == rows.filter(
        cache_status__in=["exact", "semantic"]
    ).count()


def test_incidents_are_labelled_and_visible_in_the_data(seeded):
    incidents = {i.kind: i for i in SeedIncident.objects.all()}
    assert set(incidents) == {"runaway_loop", "leaked_key", "premium_switch", "cache_outage"}
    loop = incidents["runaway_loop"]
    during = LLMRequest.objects.filter(member=loop.member, received_at__gte=loop.start, received_at__lt=loop.end)
    assert during.count() >= loop.extra_requests
    switch = incidents["premium_switch"]
    assert LLMRequest.objects.filter(model="claude-opus-4-20250514", received_at__gte=switch.start, received_at__lt=switch.end).exists()


def test_it_is_deterministic_and_skips_when_seeded(seeded, tmp_path):
    first = list(LLMRequest.objects.order_by("received_at", "request_id").values_list("request_id", "cost_usd")[:200])
    call_command("seed_demo", "--end", END.isoformat(), "--demo-key-file", "")
    assert LLMRequest.objects.count() == len(set(LLMRequest.objects.values_list("request_id", flat=True)))
    call_command("seed_demo", "--end", END.isoformat(), "--reset", "--demo-key-file", "")
    again = list(LLMRequest.objects.order_by("received_at", "request_id").values_list("request_id", "cost_usd")[:200])
    assert first == again


@pytest.mark.parametrize("sql_file", sorted(p.name for p in DOCS_SQL.glob("*.sql")))
def test_dashboard_queries_run_on_seeded_data(seeded, sql_file):
    sql = (DOCS_SQL / sql_file).read_text()
    with connection.cursor() as cursor:
        # The queries are relative to now(); pin now() to the seeded month.
        cursor.execute("SET LOCAL timezone = 'UTC'")
        cursor.execute(sql.replace("now()", f"'{END.isoformat()} 00:00+00'::timestamptz"))
        rows = cursor.fetchall()
    assert rows, f"{sql_file} returned nothing on seeded data"
    assert all(any(value not in (None, 0, Decimal(0)) for value in row) for row in rows)


def test_there_are_at_least_six_dashboard_queries():
    assert len(list(DOCS_SQL.glob("*.sql"))) >= 6
