from __future__ import annotations

import datetime as dt
import time

from apps.ledger.models import ModelPrice
from apps.ledger.pricing import Price, PriceBook
from finops.asyncdb import get_pool
from finops.errors import UnpricedModel


def price_in_force(*, model: str, on: dt.date) -> Price:
    """The price row for `model` in force on `on` (PriceBook's rule); an unpriced model is an error, never $0."""
    price = PriceBook(ModelPrice.objects.filter(model=model)).price_for(model, on)
    if price is None:
        raise UnpricedModel(f"Model '{model}' has no price in force on {on.isoformat()}; add a ModelPrice row.", param="model")
    return price


def prices_in_force(*, on: dt.date, models: list[str] | None = None) -> dict[str, Price]:
    """The price in force on `on` for every priced model (or for `models`), by PriceBook's rule; one query."""
    rows = ModelPrice.objects.all() if models is None else ModelPrice.objects.filter(model__in=models)
    book = PriceBook(rows)
    return {model: price for model in book.models() if (price := book.price_for(model, on)) is not None}


def price_book(*, models: list[str] | None = None) -> PriceBook:
    """Every price window of these models (all when None), for readers that price many days."""
    return PriceBook(ModelPrice.objects.all() if models is None else ModelPrice.objects.filter(model__in=models))


_prices: dict[tuple[str, dt.date], tuple[float, Price | None]] = {}
PRICE_ROWS_SQL = """
SELECT id, provider, model, input_per_1m, output_per_1m, cached_input_per_1m, cache_write_per_1m, priority_multiplier,
       effective_from, effective_to, kind
FROM model_prices
"""


async def price_book_fetch(conn) -> PriceBook:
    """Every price row, for the gateway's catalog (one query on the caller's asyncpg connection)."""
    return PriceBook(await conn.fetch(PRICE_ROWS_SQL))


async def price_in_force_async(*, model: str, on: dt.date) -> Price | None:
    """`price_in_force` for the event loop (asyncpg), memoised for a minute; None when unpriced."""
    now = time.monotonic()
    cached = _prices.get((model, on))
    if cached is not None and cached[0] > now:
        return cached[1]
    pool = await get_pool()
    price = PriceBook(await pool.fetch(PRICE_ROWS_SQL + " WHERE model = $1", model)).price_for(model, on)
    _prices[(model, on)] = (now + 60.0, price)
    return price


def seed_incidents_overlapping(*, start: dt.datetime, end: dt.datetime) -> list:
    """The labelled incidents `seed_demo` injected that overlap [start, end)."""
    from apps.ledger.models import SeedIncident

    return list(SeedIncident.objects.filter(start__lt=end, end__gt=start).select_related("org", "team").order_by("start"))


def ledger_time_range() -> tuple[dt.datetime, dt.datetime] | None:
    """The first and last `received_at` in llm_requests (None when empty)."""
    from django.db.models import Max, Min

    from apps.ledger.models import LLMRequest

    bounds = LLMRequest.objects.aggregate(first=Min("received_at"), last=Max("received_at"))
    return (bounds["first"], bounds["last"]) if bounds["first"] else None
