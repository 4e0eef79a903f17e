from __future__ import annotations

import datetime as dt

from django.db.models import Q

from apps.ledger.models import ModelPrice
from apps.ledger.pricing import Price
from finops.errors import UnpricedModel


def price_in_force(*, model: str, on: dt.date) -> Price:
    """The price row for `model` in force on `on`; an unpriced model is an error, never $0."""
    row = (
        ModelPrice.objects.filter(model=model, effective_from__lte=on)
        .filter(Q(effective_to__isnull=True) | Q(effective_to__gt=on))
        .order_by("-effective_from")
        .first()
    )
    if row is None:
        raise UnpricedModel(f"Model '{model}' has no price in force on {on.isoformat()}; add a ModelPrice row.", param="model")
    return Price.from_row(row)


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
