"""cost_report, chargeback and the route rollup behind routing savings."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from apps.reports.models import RouteDailySummary
from apps.reports.periods import Month, month_parse
from apps.reports.routing_savings import routing_savings
from apps.reports.services import chargeback, cost_report, route_rollup
from apps.reports.tests.conftest import at
from apps.tenancy.access import GLOBAL
from finops.errors import BadRequest


@pytest.fixture
def usage(ledger, make_tenant, two_orgs, closed_month):
    acme, globex = two_orgs
    bob = make_tenant(org="Acme", team="Catalog", user="bob")
    d = closed_month.start
    ledger.add(acme, model="gpt-4o-mini", at=at(d), prompt=1000, completion=100, route_strategy="complexity", tier="cheap")
    ledger.add(acme, model="gpt-4o", at=at(d), prompt=2000, completion=500, route_strategy="pinned", tier="premium")
    ledger.add(acme, model="gpt-4o", at=at(d), prompt=2000, completion=500, status="cached")
    ledger.add(
        bob,
        model="gpt-4o-mini",
        at=at(d + dt.timedelta(days=3)),
        prompt=3000,
        completion=700,
        route_strategy="keyword",
        tier="cheap",
    )
    ledger.add(
        globex,
        model="gpt-4o",
        at=at(d + dt.timedelta(days=5)),
        prompt=100,
        completion=10,
        route_strategy="complexity",
        tier="premium",
    )
    ledger.add(globex, model="gpt-4o-mini", at=at(closed_month.end), prompt=100, completion=10)  # next month: excluded
    ledger.rollup(since=d, until=closed_month.end)
    return {"acme": acme, "globex": globex, "bob": bob, "month": closed_month}


def cost_of(model: str, on: dt.date, prompt: int, completion: int, cached: int = 0) -> Decimal:
    return cost_compute(
        price=price_in_force(model=model, on=on), prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )


def month_rows(month: Month):
    return LLMRequest.objects.filter(received_at__gte=month.start_at, received_at__lt=month.end_at)


def test_cost_report_by_org_matches_the_ledger(usage):
    month = usage["month"]
    table = cost_report(by="org", month=month)
    by_org = {row[0]: row for row in table.rows}
    assert set(by_org) == {"acme", "globex"}
    cost_col = table.columns.index("cost_usd")
    for slug in by_org:
        expected = sum((r.cost_usd for r in month_rows(month).filter(org__slug=slug)), ZERO)
        assert by_org[slug][cost_col] == expected
    assert table.totals[cost_col] == sum((r.cost_usd for r in month_rows(month)), ZERO)
    assert by_org["acme"][table.columns.index("cache_hits")] == 1


@pytest.mark.parametrize("by, keys", [("team", {("acme", "search"), ("acme", "catalog"), ("globex", "risk")}),
                                      ("user", {("acme", "search", "alice"), ("acme", "catalog", "bob"), ("globex", "risk", "gina")}),
                                      ("model", {("gpt-4o",), ("gpt-4o-mini",)})])  # fmt: skip
def test_cost_report_dimensions_as_csv(usage, by, keys):
    out = io.StringIO()
    call_command("cost_report", "--by", by, "--month", usage["month"].label, "--format", "csv", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    key_columns = {"team": ["org", "team"], "user": ["org", "team", "user"], "model": ["model"]}[by]
    assert {tuple(r[c] for c in key_columns) for r in rows} == keys
    assert sum((Decimal(r["cost_usd"]) for r in rows), ZERO) == sum((r.cost_usd for r in month_rows(usage["month"])), ZERO)
    assert sum(Decimal(r["share_pct"]) for r in rows) == pytest.approx(Decimal(100), abs=Decimal("0.05"))


def test_cost_report_table_has_a_total_line(usage):
    out = io.StringIO()
    call_command("cost_report", "--by", "org", "--month", usage["month"].label, stdout=out)
    text = out.getvalue()
    total = sum((r.cost_usd for r in month_rows(usage["month"])), ZERO)
    assert "TOTAL" in text and f"{total.quantize(Decimal('0.01')):,}" in text
    assert text.splitlines()[0].startswith(f"Cost by org, {usage['month'].label}")


def test_cost_report_by_route_prices_the_premium_counterfactual(usage, settings):
    settings.FINOPS = {**settings.FINOPS, "REPORTS_PREMIUM_MODEL": "gpt-4o"}
    month = usage["month"]
    table = cost_report(by="route", month=month)
    rows = {(r[0], r[1]): dict(zip(table.columns, r, strict=True)) for r in table.rows}
    complexity_cheap = rows[("complexity", "cheap")]
    assert complexity_cheap["chosen_by"] == "router"
    premium = cost_of("gpt-4o", month.start, 1000, 100)
    actual = cost_of("gpt-4o-mini", month.start, 1000, 100)
    assert complexity_cheap["premium_equivalent_usd"] == premium.quantize(Decimal("1e-10"))
    assert complexity_cheap["savings_usd"] == premium - actual
    assert rows[("pinned", "premium")]["chosen_by"] == "client"
    assert "Routing savings" in table.notes[0]


def test_cost_report_rejects_a_bad_month():
    with pytest.raises(BadRequest):
        month_parse("2025-13")
    with pytest.raises(CommandError):
        call_command("cost_report", "--month", "May 2025", stdout=io.StringIO())


def test_chargeback_has_one_row_per_team_and_shares_per_org(usage):
    table = chargeback(month=usage["month"])
    rows = [dict(zip(table.columns, r, strict=True)) for r in table.rows]
    assert [(r["org"], r["team"]) for r in rows] == [("acme", "catalog"), ("acme", "search"), ("globex", "risk")]
    acme = [r for r in rows if r["org"] == "acme"]
    assert sum(r["share_of_org_pct"] for r in acme) == Decimal("100.00")
    assert sum((r["cost_usd"] for r in rows), ZERO) == sum((r.cost_usd for r in month_rows(usage["month"])), ZERO)


def test_chargeback_command_for_one_org(usage, tmp_path):
    target = tmp_path / "cb.csv"
    call_command("chargeback", "--month", usage["month"].label, "--org", "globex", "--output", str(target), stderr=io.StringIO())
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["org"], r["team"]) for r in rows] == [("globex", "risk")]
    assert Decimal(rows[0]["cost_usd"]) == cost_of("gpt-4o", usage["month"].start, 100, 10)
    with pytest.raises(CommandError):
        call_command("chargeback", "--org", "nope", stdout=io.StringIO())


def test_route_rollup_matches_the_detail_and_is_idempotent(usage):
    month = usage["month"]
    rows = RouteDailySummary.objects.filter(date__gte=month.start, date__lt=month.end)
    assert sum((r.cost_usd for r in rows), ZERO) == sum((r.cost_usd for r in month_rows(month)), ZERO)
    assert sum(r.requests for r in rows) == month_rows(month).count()
    cached = rows.get(model="gpt-4o", route_strategy="")  # the cache hit: counted, not answered
    assert (cached.requests, cached.answered, cached.prompt_tokens) == (1, 0, 0)
    before = list(rows.order_by("id").values_list("id", "updated_at"))
    assert route_rollup(since=month.start, until=month.end) == 0  # nothing changed, nothing written
    assert list(rows.order_by("id").values_list("id", "updated_at")) == before


def test_route_rollup_prunes_keys_whose_requests_are_gone(usage):
    month = usage["month"]
    LLMRequest.objects.filter(org__slug="globex").delete()
    route_rollup(since=month.start, until=month.end)
    assert not RouteDailySummary.objects.filter(org__slug="globex").exists()


def test_routing_savings_credit_only_the_router(usage, settings):
    settings.FINOPS = {**settings.FINOPS, "REPORTS_PREMIUM_MODEL": "gpt-4o"}
    month = usage["month"]
    savings = routing_savings(scope=GLOBAL, start=month.start, end=month.end)
    premium = (
        cost_of("gpt-4o", month.start, 1000, 100)
        + cost_of("gpt-4o", month.start, 3000, 700)
        + cost_of("gpt-4o", month.start, 100, 10)
    )
    actual = (
        cost_of("gpt-4o-mini", month.start, 1000, 100)
        + cost_of("gpt-4o-mini", month.start, 3000, 700)
        + cost_of("gpt-4o", month.start, 100, 10)
    )
    assert savings.savings == premium - actual
    assert savings.premium_model == "gpt-4o"
    assert {line.strategy for line in savings.by_strategy()} == {"complexity", "keyword", "pinned", "(none)"}


def test_the_premium_reference_defaults_to_the_routing_top_tier(db, prices, settings):
    from apps.reports.routing_savings import premium_reference_model
    from apps.routing.models import Tier, TierModel

    settings.FINOPS = {**settings.FINOPS, "REPORTS_PREMIUM_MODEL": ""}
    TierModel.objects.all().delete()
    Tier.objects.all().delete()
    cheap = Tier.objects.create(ladder="default", name="cheap", rank=0)
    top = Tier.objects.create(ladder="default", name="premium", rank=2)
    TierModel.objects.create(tier=cheap, model="gpt-4o-mini")
    TierModel.objects.create(tier=top, model="claude-sonnet-4-20250514")
    TierModel.objects.create(tier=top, model="gpt-4o")
    assert premium_reference_model() == "gpt-4o"  # the cheaper of the two premium models: savings never overstated
