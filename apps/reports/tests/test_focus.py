"""FOCUS v1.2 export: columns, types, and money that adds up to the ledger exactly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.ledger.money import ZERO
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from apps.reports import focus
from apps.reports.services import FocusReconciliationError, focus_export, month_ledger_total
from apps.reports.tests.conftest import at

ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def export(month, **kwargs) -> tuple[list[dict[str, str]], list[str]]:
    out = io.StringIO()
    focus_export(month=month, out=out, **kwargs)
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    return list(reader), list(reader.fieldnames or [])


@pytest.fixture
def month_of_usage(ledger, two_orgs, closed_month):
    """A month with ordinary, cached-prompt, cache-hit, failed, escalated and premium requests in two orgs."""
    acme, globex = two_orgs
    d1, d2, d3 = closed_month.start, closed_month.start + dt.timedelta(days=9), closed_month.end - dt.timedelta(days=1)
    for i in range(7):  # odd token counts: per-request rounding residuals that must not leak
        ledger.add(acme, model="gpt-4o-mini", at=at(d1, 9), prompt=1003 + i * 37, completion=211 + i, cached=0)
    ledger.add(acme, model="gpt-4o-mini", at=at(d1, 10), prompt=2001, completion=333, cached=1500)
    ledger.add(acme, model="gpt-4o", at=at(d1, 11), prompt=4000, completion=999, tier="premium")
    ledger.add(acme, model="gpt-4o", at=at(d1, 12), prompt=4000, completion=999, status="cached")
    ledger.add(acme, model="gpt-4o", at=at(d2, 12), prompt=3000, completion=0, status="failed", cost=ZERO)
    cheap = cost_compute(price=price_in_force(model="gpt-4o-mini", on=d2), prompt_tokens=1200, completion_tokens=300)
    ledger.add(
        acme,
        model="gpt-4o",
        at=at(d2, 13),
        prompt=1200,
        completion=300,
        escalation_cost=cheap,
        route_strategy="confidence",
        tier="premium",
    )
    ledger.add(globex, model="claude-sonnet-4-20250514", at=at(d3, 23), prompt=1777, completion=555, cached=600, tier="premium")
    ledger.add(globex, model="gpt-4o-mini", at=at(d3, 1), prompt=50, completion=5)
    return closed_month


def test_it_has_every_mandatory_column_with_valid_types(month_of_usage):
    rows, columns = export(month_of_usage)
    assert set(focus.MANDATORY_COLUMNS) <= set(columns)
    assert {"ConsumedQuantity", "ConsumedUnit", "SkuMeter", "ServiceSubcategory", "x_Team", "x_CacheSavings"} <= set(columns)
    assert rows
    for row in rows:
        for column in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
            assert ISO_8601.match(row[column]), (column, row[column])
            dt.datetime.fromisoformat(row[column].replace("Z", "+00:00"))
        assert row["BillingPeriodStart"] == f"{month_of_usage.start}T00:00:00Z"
        assert row["BillingPeriodEnd"] == f"{month_of_usage.end}T00:00:00Z"
        start = dt.datetime.fromisoformat(row["ChargePeriodStart"].replace("Z", "+00:00"))
        assert dt.datetime.fromisoformat(row["ChargePeriodEnd"].replace("Z", "+00:00")) - start == dt.timedelta(days=1)
        for column in focus.DECIMAL_COLUMNS:
            Decimal(row[column])  # parses, no exponent or float noise
            assert "e" not in row[column].lower()
        assert row["BillingCurrency"] == "USD"
        assert row["ChargeCategory"] in {"Usage", "Adjustment"}
        assert row["ChargeClass"] == ""
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ServiceSubcategory"] == "Generative AI"
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"]
        for column in (
            "BillingAccountId",
            "BillingAccountName",
            "ProviderName",
            "PublisherName",
            "InvoiceIssuerName",
            "ServiceName",
            "ChargeDescription",
        ):
            assert row[column], column
        if row["ChargeCategory"] == "Usage" and row["ConsumedUnit"] == "Tokens":
            assert row["SkuMeter"] in {"Input Tokens", "Output Tokens", "Cached Input Tokens"}
            assert Decimal(row["PricingQuantity"]) == Decimal(row["ConsumedQuantity"]) / 1_000_000
            assert row["PricingUnit"] == "1M Tokens"


def test_it_round_trips_to_the_ledger_total_exactly(month_of_usage):
    rows, _ = export(month_of_usage)
    billed = sum((Decimal(r["BilledCost"]) for r in rows), ZERO)
    assert billed == month_ledger_total(month=month_of_usage)
    assert billed > 0
    assert sum((Decimal(r["x_CacheSavings"]) for r in rows), ZERO) > 0


def test_it_splits_meters_from_tokens_times_the_price_row(month_of_usage):
    rows, _ = export(month_of_usage)
    globex = [r for r in rows if r["BillingAccountId"] == "globex" and r["x_Model"] == "claude-sonnet-4-20250514"]
    meters = {r["SkuMeter"]: r for r in globex}
    assert set(meters) == {"Input Tokens", "Cached Input Tokens", "Output Tokens"}
    assert meters["Input Tokens"]["ConsumedQuantity"] == "1177"
    assert meters["Cached Input Tokens"]["ConsumedQuantity"] == "600"
    assert meters["Output Tokens"]["ConsumedQuantity"] == "555"
    price = price_in_force(model="claude-sonnet-4-20250514", on=month_of_usage.start)
    assert Decimal(meters["Input Tokens"]["ListUnitPrice"]) == price.input_per_1m
    assert Decimal(meters["Output Tokens"]["ListUnitPrice"]) == price.output_per_1m
    assert meters["Input Tokens"]["SkuPriceId"] == f"model_prices:{price.id}"
    total = sum((Decimal(r["BilledCost"]) for r in globex), ZERO)
    assert total == cost_compute(price=price, prompt_tokens=1777, completion_tokens=555, cached_tokens=600)
    assert {r["ChargeCategory"] for r in rows} == {"Usage"}  # rounding residuals folded, no adjustments


def test_it_gives_escalations_their_own_meter(month_of_usage):
    rows, _ = export(month_of_usage)
    escalation = [r for r in rows if r["SkuMeter"] == "Escalation"]
    assert len(escalation) == 1
    expected = cost_compute(
        price=price_in_force(model="gpt-4o-mini", on=month_of_usage.start), prompt_tokens=1200, completion_tokens=300
    )
    assert Decimal(escalation[0]["BilledCost"]) == expected
    assert escalation[0]["ConsumedUnit"] == "Requests" and escalation[0]["ConsumedQuantity"] == "1"
    assert escalation[0]["SkuPriceId"] == ""


def test_it_keeps_the_grain_of_day_team_model_meter(month_of_usage):
    rows, _ = export(month_of_usage)
    keys = Counter(
        (r["ChargePeriodStart"], r["SubAccountId"], r["x_Model"], r["SkuPriceId"], r["SkuMeter"], r["ChargeCategory"])
        for r in rows
    )
    assert max(keys.values()) == 1
    day1_mini = [
        r for r in rows if r["ChargePeriodStart"].startswith(str(month_of_usage.start)) and r["x_Model"] == "gpt-4o-mini"
    ]
    assert {r["SkuMeter"] for r in day1_mini} == {"Input Tokens", "Cached Input Tokens", "Output Tokens"}
    assert (
        sum(int(r["ConsumedQuantity"]) for r in day1_mini if r["SkuMeter"] != "Output Tokens")
        == sum(1003 + i * 37 for i in range(7)) + 2001
    )
    assert all(r["x_Team"] == "search" and r["SubAccountId"] == "acme/search" for r in day1_mini)


def test_a_cost_the_tokens_do_not_explain_becomes_an_adjustment_row(ledger, two_orgs, closed_month):
    acme, _ = two_orgs
    # The gateway's escalated rows carry the tokens of both calls: tokens × the final price ≠ the cost.
    ledger.add(acme, model="gpt-4o", at=at(closed_month.start), prompt=2000, completion=400, cost=Decimal("0.0040000000"))
    rows, _ = export(closed_month)
    adjustments = [r for r in rows if r["ChargeCategory"] == "Adjustment"]
    assert len(adjustments) == 1
    assert Decimal(adjustments[0]["BilledCost"]) < 0
    assert (
        sum((Decimal(r["BilledCost"]) for r in rows), ZERO) == Decimal("0.0040000000") == month_ledger_total(month=closed_month)
    )


def test_it_exports_one_org_only(month_of_usage):
    rows, _ = export(month_of_usage, org_slug="globex")
    assert {r["BillingAccountId"] for r in rows} == {"globex"}
    assert sum((Decimal(r["BilledCost"]) for r in rows), ZERO) == month_ledger_total(month=month_of_usage, org_slug="globex")


def test_usage_rows_refuses_nothing_and_reconciles_a_cache_only_group():
    group = focus.UsageGroup(
        day=dt.date(2025, 5, 1), org_slug="acme", org_name="Acme", team_slug="search", team_name="Search", model="gpt-4o",
        provider="openai", price=None, requests=3, billed_requests=0, input_tokens=0, cached_tokens=0, output_tokens=0,
        cost=ZERO, escalation_cost=ZERO, escalations=0, saved=Decimal("0.0300000000"),
    )  # fmt: skip
    rows = focus.usage_rows(group, billing_start=dt.date(2025, 5, 1), billing_end=dt.date(2025, 6, 1))
    assert len(rows) == 1
    assert Decimal(rows[0]["BilledCost"]) == 0 and rows[0]["x_CacheSavings"] == "0.0300000000"


def test_the_export_refuses_to_write_rows_that_do_not_add_up(month_of_usage, monkeypatch):
    original = focus.usage_rows

    def lossy(group, **kwargs):
        return original(group, **kwargs)[:-1]  # drop one row: the export must notice

    monkeypatch.setattr(focus, "usage_rows", lossy)
    with pytest.raises(FocusReconciliationError):
        export(month_of_usage)


def test_export_focus_command_writes_the_file(month_of_usage, tmp_path):
    target = tmp_path / "focus.csv"
    err = io.StringIO()
    call_command("export_focus", "--month", month_of_usage.label, "--output", str(target), stderr=err)
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum((Decimal(r["BilledCost"]) for r in rows), ZERO) == month_ledger_total(month=month_of_usage)
    assert f"ledger {month_ledger_total(month=month_of_usage)} USD" in err.getvalue()
