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
