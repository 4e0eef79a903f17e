"""The one cost function and the one price-in-force rule. Pure: token counts × a dated price row, in Decimal.

- `cost_compute`: ((prompt − cached − cache_write) × input + cached × cached_input + cache_write × cache_write_rate
  + completion × output) × the service tier's multiplier, per 1M tokens (docs/cost-model/README.md, "Usage details").
- `cost_upper_bound`: the most a request can cost before its usage is known (every prompt token at the dearest
  prompt-side rate, the priority multiplier when priority was asked for): what a reservation holds.
- `PriceBook.price_for(model, on)`: the row in force on a day, `effective_from ≤ on < effective_to` (open-ended
  when effective_to is empty), the newest window first. Every reader of prices (the gateway's catalog, the
  ledger's selectors, the cache's savings, reports) goes through it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from apps.ledger.money import TOKENS_PER_PRICE_UNIT, quantize_usd
from finops.errors import BadRequest

PRIORITY = "priority"
ONE = Decimal(1)


@dataclass(frozen=True)
class Price:
    """The numbers of a ModelPrice row, detached from the ORM so the async path can use them."""

    id: int | None
    provider: str
    model: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    # NULL: the provider does not bill cache writes separately, so written tokens bill at the input price.
    cache_write_per_1m: Decimal | None = None
    # NULL: no priority tier priced for this model (a priority answer bills at the standard rates, and is logged).
    priority_multiplier: Decimal | None = None
    kind: str = "chat"  # ModelPrice.kind: "chat" or "embedding"

    @classmethod
    def from_row(cls, row) -> Price:
        return cls(
            id=row.id if hasattr(row, "id") else row["id"],
            provider=_get(row, "provider"),
            model=_get(row, "model"),
            input_per_1m=Decimal(_get(row, "input_per_1m")),
            output_per_1m=Decimal(_get(row, "output_per_1m")),
            cached_input_per_1m=_decimal_or_none(row, "cached_input_per_1m"),
            cache_write_per_1m=_decimal_or_none(row, "cache_write_per_1m"),
            priority_multiplier=_decimal_or_none(row, "priority_multiplier"),
            kind=_get_or(row, "kind", "chat"),
        )

    def tier_multiplier(self, service_tier: str | None) -> Decimal:
        """The factor for an answer served at `service_tier` ("priority" is the only tier priced apart)."""
        if service_tier == PRIORITY and self.priority_multiplier is not None:
            return self.priority_multiplier
        return ONE


@dataclass(frozen=True, slots=True)
class PriceWindow:
    effective_from: dt.date
    effective_to: dt.date | None
    price: Price

    def in_force(self, on: dt.date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or self.effective_to > on)


class PriceBook:
    """Price rows (dicts, asyncpg records or ModelPrice instances) by model, newest window first."""

    __slots__ = ("windows",)

    def __init__(self, rows: Iterable = ()) -> None:
        self.windows: dict[str, list[PriceWindow]] = {}
        for row in rows:
            window = PriceWindow(_get(row, "effective_from"), _get(row, "effective_to"), Price.from_row(row))
            self.windows.setdefault(window.price.model, []).append(window)
        for windows in self.windows.values():
            windows.sort(key=lambda w: w.effective_from, reverse=True)

    @classmethod
    def from_fixture(cls, rows: Iterable[dict]) -> PriceBook:
        """A book of `fixtures/prices.json` entries (ISO dates as text, no ids): the offline tools' price table."""
        return cls(
            {
                **row,
                "id": None,
                "effective_from": dt.date.fromisoformat(row["effective_from"]),
                "effective_to": dt.date.fromisoformat(row["effective_to"]) if row.get("effective_to") else None,
            }
            for row in rows
        )

    def window_for(self, model: str, on: dt.date) -> PriceWindow | None:
        for window in self.windows.get(model, ()):
            if window.in_force(on):
                return window
        return None

    def price_for(self, model: str, on: dt.date) -> Price | None:
        window = self.window_for(model, on)
        return window.price if window is not None else None

    def latest(self, model: str) -> Price | None:
        windows = self.windows.get(model)
        return windows[0].price if windows else None

    def models(self) -> list[str]:
        return list(self.windows)


def _get(row, name):
    return getattr(row, name) if hasattr(row, name) else row[name]


def _get_or(row, name, default):
    """An optional column: rows built by hand (tests, older queries, old fixtures) may not carry it."""
    if hasattr(row, name):
        return getattr(row, name)
    try:
        return row[name]
    except (KeyError, IndexError, TypeError):
        return default


def _decimal_or_none(row, name) -> Decimal | None:
    """A nullable price column; rows read before the column existed (old fixtures, dict rows) have none."""
    value = _get_or(row, name, None)
    return None if value is None else Decimal(value)


def token_charge(*, prompt, cached, cache_write, completion, input_rate, cached_rate, write_rate, output_rate):
    """THE cost formula, per 1M tokens: each prompt token once at its own rate, plus the completion.

        (prompt − cached − written) × input + cached × cached_input + written × cache_write + completion × output

    Generic over the numbers it is given: int token counts and Decimal rates here, Decimal averages in the offline
    cost model (evals/costmodel), integer numpy arrays in the demo seed. Its SQL twin is `finops_cost_usd`
    (apps/ledger/migrations; apps/ledger/tests/test_pricing_sql.py keeps them equal)."""
    return (
        (prompt - cached - cache_write) * input_rate
        + cached * cached_rate
        + cache_write * write_rate
        + completion * output_rate
    )


def cost_compute(
    *,
    price: Price,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    service_tier: str | None = None,
) -> Decimal:
    """((prompt − cached − written) × input + cached × cached_input + written × cache_write + completion × output)
    × the tier multiplier, per 1M tokens.

    Cached (read) and written tokens are subsets of prompt tokens (OpenAI's `prompt_tokens_details.cached_tokens`;
    Anthropic's cache_read/cache_creation input tokens once `apps.gateway.usage` has added them to the prompt), so
    each prompt token is billed once, at its own rate. Reasoning tokens are part of `completion_tokens` by then.
    """
    for name, value in (
        ("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens),
        ("cached_tokens", cached_tokens), ("cache_write_tokens", cache_write_tokens),
    ):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"{name} must be a non-negative integer, got {value!r}")
    if cached_tokens + cache_write_tokens > prompt_tokens:
        raise BadRequest(
            f"cached_tokens ({cached_tokens}) + cache_write_tokens ({cache_write_tokens}) cannot exceed prompt_tokens ({prompt_tokens})"
        )
    cached_rate = price.input_per_1m if price.cached_input_per_1m is None else price.cached_input_per_1m
    write_rate = price.input_per_1m if price.cache_write_per_1m is None else price.cache_write_per_1m
    micro_total = token_charge(
        prompt=prompt_tokens, cached=cached_tokens, cache_write=cache_write_tokens, completion=completion_tokens,
        input_rate=price.input_per_1m, cached_rate=cached_rate, write_rate=write_rate, output_rate=price.output_per_1m,
    )  # fmt: skip
    multiplier = price.tier_multiplier(service_tier)
    if multiplier != ONE:
        micro_total *= multiplier
    return quantize_usd(micro_total / TOKENS_PER_PRICE_UNIT)


def cost_upper_bound(*, price: Price, prompt_tokens: int, completion_tokens: int, service_tier: str | None = None) -> Decimal:
    """The most these tokens can cost: every prompt token at the dearest prompt-side rate (a cache write costs more
    than plain input at Anthropic), and the priority multiplier when the request asks for priority."""
    rates = [price.input_per_1m, *(r for r in (price.cached_input_per_1m, price.cache_write_per_1m) if r is not None)]
    dearest = max(rates)
    bound = Price(
        id=price.id, provider=price.provider, model=price.model, input_per_1m=dearest, output_per_1m=price.output_per_1m,
        cached_input_per_1m=None, cache_write_per_1m=None, priority_multiplier=price.priority_multiplier,
    )  # fmt: skip
    return cost_compute(price=bound, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, service_tier=service_tier)
