"""The SQL twins of the price-in-force rule and the cost formula agree with apps.ledger.pricing."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.ledger.models import ModelPrice
from apps.ledger.money import quantize_usd
from apps.ledger.pricing import Price, PriceBook, cost_compute
from apps.ledger.selectors import price_in_force

pytestmark = pytest.mark.django_db


def sql_price_id(model: str, on: dt.date) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT (finops_price_in_force(%s, %s)).id", [model, on])
        return cursor.fetchone()[0]


def test_the_price_in_force_is_the_same_row_in_python_and_sql():
    def row(start, end, rate):
        return ModelPrice.objects.create(
            provider="openai", model="m", input_per_1m=Decimal(rate), output_per_1m=Decimal(rate),
            effective_from=start, effective_to=end,
        )  # fmt: skip

    old = row(dt.date(2026, 1, 1), dt.date(2026, 6, 1), "1")
    new = row(dt.date(2026, 6, 1), None, "2")
    book = PriceBook(ModelPrice.objects.all())
    for day, expected in (
        (dt.date(2025, 12, 31), None),
        (dt.date(2026, 1, 1), old),
        (dt.date(2026, 5, 31), old),
        (dt.date(2026, 6, 1), new),  # effective_to is exclusive: the new row from its first day
        (dt.date(2030, 1, 1), new),
    ):
        python = book.price_for("m", day)
        assert (python.id if python else None) == (expected.id if expected else None) == sql_price_id("m", day), day
    assert price_in_force(model="m", on=dt.date(2026, 6, 1)).id == new.id
    assert sql_price_id("unpriced", dt.date(2026, 6, 1)) is None


money = st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=6, allow_nan=False, allow_infinity=False)


multiplier = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("10"), places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.integers(0, 2_000_000), completion=st.integers(0, 200_000), cached_share=st.floats(0, 1),
    rate_in=money, rate_out=money, rate_cached=st.one_of(st.none(), money),
)  # fmt: skip
def test_the_six_argument_sql_cost_formula_still_works(prompt, completion, cached_share, rate_in, rate_out, rate_cached):
    """Reports written for 0002's function (six arguments) get the same figure from the replaced one."""
    cached = int(prompt * cached_share)
    price = Price(id=None, provider="p", model="m", input_per_1m=rate_in, output_per_1m=rate_out, cached_input_per_1m=rate_cached)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT finops_cost_usd(%s, %s, %s, %s, %s, %s)", [prompt, completion, cached, rate_in, rate_cached, rate_out]
        )
        sql = cursor.fetchone()[0]
    assert quantize_usd(sql) == cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)


@settings(max_examples=80, deadline=None)
@given(
    prompt=st.integers(0, 2_000_000), completion=st.integers(0, 200_000), cached_share=st.floats(0, 1),
    write_share=st.floats(0, 1), rate_in=money, rate_out=money, rate_cached=st.one_of(st.none(), money),
    rate_write=st.one_of(st.none(), money), priority=st.one_of(st.none(), multiplier),
    tier=st.sampled_from(["", "default", "priority", "flex"]),
)  # fmt: skip
def test_the_sql_cost_formula_is_cost_compute_before_rounding(
    prompt, completion, cached_share, write_share, rate_in, rate_out, rate_cached, rate_write, priority, tier
):
    cached = int(prompt * cached_share)
    written = int((prompt - cached) * write_share)
    price = Price(
        id=None, provider="p", model="m", input_per_1m=rate_in, output_per_1m=rate_out, cached_input_per_1m=rate_cached,
        cache_write_per_1m=rate_write, priority_multiplier=priority,
    )  # fmt: skip
    # The caller picks the multiplier the way reports do: the row's priority factor for a priority row, else NULL.
    factor = priority if tier == "priority" else None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT finops_cost_usd(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [prompt, completion, cached, rate_in, rate_cached, rate_out, written, rate_write, factor],
        )
        sql = cursor.fetchone()[0]
    python = cost_compute(
        price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached, cache_write_tokens=written,
        service_tier=tier,
    )  # fmt: skip
    assert quantize_usd(sql) == python
