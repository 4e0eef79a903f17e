"""The cost function against hand-computed prices (docs/architecture.md, "One request, end to end", stage 10)."""

import datetime as dt
from decimal import Decimal

import pytest

from apps.ledger.money import quantize_usd, usd_str
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from finops.errors import BadRequest, UnpricedModel

ON = dt.date(2026, 11, 1)


@pytest.mark.parametrize(
    ("model", "prompt", "cached", "completion", "expected"),
    [
        # gpt-4o: $2.50 in, $1.25 cached in, $10 out per 1M: (600×2.5 + 400×1.25 + 500×10) / 1e6
        ("gpt-4o", 1000, 400, 500, "0.0070000000"),
        # gpt-4o-mini: (234×0.15 + 1000×0.075 + 56×0.60) / 1e6 = 143.7e-6
        ("gpt-4o-mini", 1234, 1000, 56, "0.0001437000"),
        # claude-sonnet-4: (2000×3 + 1000×15) / 1e6
        ("claude-sonnet-4-20250514", 2000, 0, 1000, "0.0210000000"),
        # gemini-2.5-pro: (5×1.25 + 5×0.31 + 3×10) / 1e6 = 37.8e-6
        ("gemini-2.5-pro", 10, 5, 3, "0.0000378000"),
        # mixtral has no cached-input discount: cached tokens bill at the input price, once.
        ("mixtral-8x7b-instruct", 100, 50, 10, "0.0000660000"),
        # gpt-4.1-nano: one cached token = 0.025e-6, exact at 10 decimals
        ("gpt-4.1-nano", 1, 1, 0, "0.0000000250"),
    ],
)
def test_it_prices_by_hand(prices, model, prompt, cached, completion, expected):
    price = price_in_force(model=model, on=ON)
    cost = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    assert cost == Decimal(expected)
    assert usd_str(cost) == expected


def test_it_never_bills_cached_tokens_twice(prices):
    price = price_in_force(model="gpt-4o", on=ON)
    all_cached = cost_compute(price=price, prompt_tokens=1000, completion_tokens=0, cached_tokens=1000)
    none_cached = cost_compute(price=price, prompt_tokens=1000, completion_tokens=0, cached_tokens=0)
    assert all_cached == Decimal("0.00125")
    assert none_cached == Decimal("0.0025")


def test_unpriced_model_is_an_error_not_zero(prices):
    with pytest.raises(UnpricedModel) as excinfo:
        price_in_force(model="gpt-7-ultra", on=ON)
    assert excinfo.value.status == 400
    assert excinfo.value.as_json()["error"]["code"] == "model_not_priced"


def test_price_before_its_effective_date_is_not_in_force(prices):
    with pytest.raises(UnpricedModel):
        price_in_force(model="claude-sonnet-4-20250514", on=dt.date(2025, 5, 1))


def test_bad_token_counts_are_rejected(prices):
    price = price_in_force(model="gpt-4o", on=ON)
    with pytest.raises(BadRequest):
        cost_compute(price=price, prompt_tokens=10, completion_tokens=0, cached_tokens=11)
    with pytest.raises(BadRequest):
        cost_compute(price=price, prompt_tokens=-1, completion_tokens=0)
    with pytest.raises(BadRequest):
        cost_compute(price=price, prompt_tokens=1.5, completion_tokens=0)  # type: ignore[arg-type]


def test_quantize_rounds_half_even_and_refuses_floats():
    assert quantize_usd(Decimal("0.00000000005")) == Decimal("0E-10")
    assert quantize_usd(Decimal("0.00000000015")) == Decimal("2E-10")
    with pytest.raises(TypeError):
        quantize_usd(0.1)  # type: ignore[arg-type]
