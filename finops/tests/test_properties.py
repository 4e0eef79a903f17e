"""Property tests (hypothesis) for the cost function and the daily rollup.

Linearity, stated exactly: `cost_compute` computes the exact rational cost and then rounds once, half-even,
to 10 places. So for any token splits a + b (componentwise), |cost(a+b) − cost(a) − cost(b)| ≤ 1e-10
(each of the three terms is off by at most half a quantum), and the unrounded costs add up exactly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ledger.money import COST_QUANTUM, TOKENS_PER_PRICE_UNIT
from apps.ledger.pricing import Price, cost_compute
from finops.errors import BadRequest

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# NUMERIC(12,6) prices per 1M tokens, as stored in model_prices.
price_amount = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("999999.999999"), places=6, allow_nan=False, allow_infinity=False
)
tokens = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def prices(draw) -> Price:
    return Price(
        id=None,
        provider="p",
        model="m",
        input_per_1m=draw(price_amount),
        output_per_1m=draw(price_amount),
        cached_input_per_1m=draw(st.none() | price_amount),
    )


@st.composite
def usages(draw) -> tuple[int, int, int]:
    prompt = draw(tokens)
    return prompt, draw(tokens), draw(st.integers(min_value=0, max_value=prompt))


def exact_cost(price: Price, prompt: int, completion: int, cached: int) -> Decimal:
    """The unrounded cost, computed with enough precision that nothing is lost."""
    from decimal import localcontext

    cached_rate = price.input_per_1m if price.cached_input_per_1m is None else price.cached_input_per_1m
    with localcontext() as ctx:
        ctx.prec = 60
        return (
            (prompt - cached) * price.input_per_1m + cached * cached_rate + completion * price.output_per_1m
        ) / TOKENS_PER_PRICE_UNIT


@PROPERTY_SETTINGS
@given(price=prices(), usage=usages())
def test_cost_is_exact_non_negative_decimal_at_ten_places(price, usage):
    prompt, completion, cached = usage
    cost = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    assert isinstance(cost, Decimal)
    assert cost >= 0
    assert cost.as_tuple().exponent == -10
    # One rounding only: within half a quantum of the exact value.
    assert abs(cost - exact_cost(price, prompt, completion, cached)) <= COST_QUANTUM / 2


@PROPERTY_SETTINGS
@given(price=prices(), a=usages(), b=usages())
def test_cost_is_linear_in_tokens_up_to_one_rounding(price, a, b):
    total = tuple(x + y for x, y in zip(a, b, strict=True))
    cost_a = cost_compute(price=price, prompt_tokens=a[0], completion_tokens=a[1], cached_tokens=a[2])
    cost_b = cost_compute(price=price, prompt_tokens=b[0], completion_tokens=b[1], cached_tokens=b[2])
    cost_ab = cost_compute(price=price, prompt_tokens=total[0], completion_tokens=total[1], cached_tokens=total[2])
    assert abs(cost_ab - (cost_a + cost_b)) <= COST_QUANTUM
    # At full precision the split is exact.
    assert exact_cost(price, *total) == exact_cost(price, *a) + exact_cost(price, *b)


@PROPERTY_SETTINGS
@given(price=prices(), usage=usages())
def test_cached_tokens_are_billed_once_at_the_cached_rate(price, usage):
    prompt, completion, cached = usage
    cached_rate = price.input_per_1m if price.cached_input_per_1m is None else price.cached_input_per_1m
    with_cache = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    without = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=0)
    # Moving `cached` tokens from the input rate to the cached rate changes the cost by exactly that difference.
    expected_delta = cached * (price.input_per_1m - cached_rate) / TOKENS_PER_PRICE_UNIT
    assert abs((without - with_cache) - expected_delta) <= COST_QUANTUM
    if cached_rate <= price.input_per_1m:
        assert with_cache <= without


@PROPERTY_SETTINGS
@given(price=prices(), prompt=tokens, extra=st.integers(min_value=1, max_value=1000))
def test_cached_tokens_beyond_prompt_are_refused(price, prompt, extra):
    with pytest.raises(BadRequest):
        cost_compute(price=price, prompt_tokens=prompt, completion_tokens=0, cached_tokens=prompt + extra)


@PROPERTY_SETTINGS
@given(price=prices(), bad=st.integers(max_value=-1) | st.booleans() | st.floats(allow_nan=False))
def test_negative_or_non_integer_tokens_are_refused(price, bad):
    with pytest.raises(BadRequest):
        cost_compute(price=price, prompt_tokens=bad, completion_tokens=0)


# --- rollup -------------------------------------------------------------------------------------------------------

BASE_DAY = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)

detail_row = st.fixed_dictionaries(
    {
        "day": st.integers(min_value=0, max_value=3),
        "seconds": st.integers(min_value=0, max_value=86_399),
        "user": st.integers(min_value=0, max_value=2),
        "model": st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"]),
        "endpoint": st.sampled_from(["chat", "chat_completions"]),
        "status": st.sampled_from(["served", "cached", "failed", "rejected"]),
        "cache_status": st.sampled_from(["none", "miss", "exact", "semantic"]),
        "budget_state": st.sampled_from(["none", "ok", "fail_open"]),
        "prompt": st.integers(min_value=0, max_value=200_000),
        "completion": st.integers(min_value=0, max_value=200_000),
        "cached_share": st.floats(min_value=0, max_value=1),
        "cost": st.decimals(min_value=0, max_value=Decimal("99.9999999999"), places=10, allow_nan=False, allow_infinity=False),
        "saved": st.decimals(min_value=0, max_value=Decimal("9.9999999999"), places=10, allow_nan=False, allow_infinity=False),
    }
)


@pytest.fixture
def three_users(make_tenant):
    return [
        make_tenant(),
        make_tenant(org="Globex", team="Risk", user="bob"),
        make_tenant(org="Globex", team="Risk", user="carol"),
    ]


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(rows=st.lists(detail_row, min_size=0, max_size=40))
def test_rollup_summaries_sum_to_the_detail_rows(three_users, rows):
    from django.db.models import Count, Sum

    from apps.ledger.models import CostDailySummary, LLMRequest
    from apps.ledger.services import cost_rollup

    # The db fixture's transaction spans all examples: clean inside each one.
    LLMRequest.objects.all().delete()
    CostDailySummary.objects.all().delete()
    LLMRequest.objects.bulk_create(
        LLMRequest(
            request_id=uuid.uuid4(),
            endpoint=r["endpoint"],
            received_at=BASE_DAY + dt.timedelta(days=r["day"], seconds=r["seconds"]),
            org=three_users[r["user"]].org,
            team=three_users[r["user"]].team,
            member=three_users[r["user"]].member,
            api_key=three_users[r["user"]].api_key,
            status=r["status"],
            model=r["model"],
            prompt_tokens=r["prompt"],
            completion_tokens=r["completion"],
            cached_tokens=int(r["prompt"] * r["cached_share"]),
            cost_usd=r["cost"],
            saved_usd=r["saved"],
            cache_status=r["cache_status"],
            budget_state=r["budget_state"],
        )
        for r in rows
    )
    cost_rollup(since=BASE_DAY.date(), until=BASE_DAY.date() + dt.timedelta(days=3))

    summaries = CostDailySummary.objects.aggregate(
        requests=Sum("requests"), errors=Sum("errors"), cache_hits=Sum("cache_hits"), fail_open=Sum("fail_open"),
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cached=Sum("cached_tokens"),
        cost=Sum("cost_usd"), saved=Sum("saved_usd"), keys=Count("id"),
    )  # fmt: skip
    assert (summaries["requests"] or 0) == len(rows)
    assert (summaries["errors"] or 0) == sum(r["status"] in ("failed", "rejected") for r in rows)
    assert (summaries["cache_hits"] or 0) == sum(r["cache_status"] in ("exact", "semantic") for r in rows)
    assert (summaries["fail_open"] or 0) == sum(r["budget_state"] == "fail_open" for r in rows)
    assert (summaries["prompt"] or 0) == sum(r["prompt"] for r in rows)
    assert (summaries["completion"] or 0) == sum(r["completion"] for r in rows)
    assert (summaries["cached"] or 0) == sum(int(r["prompt"] * r["cached_share"]) for r in rows)
    assert (summaries["cost"] or 0) == sum((r["cost"] for r in rows), Decimal(0))  # exact, not approximately
    assert (summaries["saved"] or 0) == sum((r["saved"] for r in rows), Decimal(0))
    assert summaries["keys"] == len({(r["day"], r["model"], r["endpoint"], r["user"]) for r in rows})

    # Per key, too: each summary row equals the sum of its own detail rows.
    for s in CostDailySummary.objects.all():
        mine = [
            r for r in rows
            if (BASE_DAY.date() + dt.timedelta(days=r["day"]), r["model"], r["endpoint"], three_users[r["user"]].member.pk)
            == (s.date, s.model, s.endpoint, s.user_id)
        ]  # fmt: skip
        assert s.requests == len(mine)
        assert s.cost_usd == sum((r["cost"] for r in mine), Decimal(0))
