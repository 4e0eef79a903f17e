"""The one cost function and the one price-in-force rule. Pure: token counts × a dated price row, in Decimal.

- `cost_compute`: (prompt − cached) × input + cached × cached_input + completion × output, per 1M tokens.
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


@dataclass(frozen=True)
class Price:
    """The numbers of a ModelPrice row, detached from the ORM so the async path can use them."""

    id: int | None
    provider: str
    model: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    kind: str = "chat"  # ModelPrice.kind: "chat" or "embedding"

    @classmethod
    def from_row(cls, row) -> Price:
        return cls(
            id=row.id if hasattr(row, "id") else row["id"],
            provider=_get(row, "provider"),
            model=_get(row, "model"),
            input_per_1m=Decimal(_get(row, "input_per_1m")),
            output_per_1m=Decimal(_get(row, "output_per_1m")),
            cached_input_per_1m=None if _get(row, "cached_input_per_1m") is None else Decimal(_get(row, "cached_input_per_1m")),
            kind=_get_or(row, "kind", "chat"),
        )


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

    def price_for(self, model: str, on: dt.date) -> Price | None:
        for window in self.windows.get(model, ()):
            if window.in_force(on):
                return window.price
        return None

    def latest(self, model: str) -> Price | None:
        windows = self.windows.get(model)
        return windows[0].price if windows else None

    def models(self) -> list[str]:
        return list(self.windows)


def _get(row, name):
    return getattr(row, name) if hasattr(row, name) else row[name]


def _get_or(row, name, default):
    """An optional column: rows built by hand (tests, older queries) may not carry it."""
    if hasattr(row, name):
        return getattr(row, name)
    try:
        return row[name]
    except (KeyError, IndexError, TypeError):
        return default


def cost_compute(*, price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
    """(prompt − cached) × input + cached × cached_input + completion × output, per 1M tokens.

    Cached tokens are a subset of prompt tokens (OpenAI's `prompt_tokens_details.cached_tokens`),
    so they are billed once, at the cached rate, and never again at the input rate.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens), ("cached_tokens", cached_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"{name} must be a non-negative integer, got {value!r}")
    if cached_tokens > prompt_tokens:
        raise BadRequest(f"cached_tokens ({cached_tokens}) cannot exceed prompt_tokens ({prompt_tokens})")
    cached_rate = price.input_per_1m if price.cached_input_per_1m is None else price.cached_input_per_1m
    micro_total = (
        (prompt_tokens - cached_tokens) * price.input_per_1m
        + cached_tokens * cached_rate
        + completion_tokens * price.output_per_1m
    )
    return quantize_usd(micro_total / TOKENS_PER_PRICE_UNIT)
