"""Test helpers: a ledger with a constructed hourly shape (the webhook receiver is apps/alerts/tests/helpers.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from apps.ledger.models import LLMRequest


def ledger_hours(
    tenant,
    *,
    end: dt.datetime,
    hours: int,
    per_hour,
    cost: Decimal = Decimal("0.01"),
    model: str = "gpt-4o-mini",
    tier: str = "cheap",
) -> int:
    """Rows for `hours` hours before `end` (exclusive); per_hour(i) gives the row count of hour i (0 = oldest)."""
    rows = []
    start = end - dt.timedelta(hours=hours)
    for i in range(hours):
        at = start + dt.timedelta(hours=i, minutes=7)
        for k in range(per_hour(i)):
            rows.append(
                LLMRequest(
                    endpoint="chat_completions",
                    received_at=at + dt.timedelta(seconds=k),
                    org=tenant.org,
                    team=tenant.team,
                    member=tenant.member,
                    api_key=tenant.api_key,
                    status="served",
                    model=model,
                    requested_model=model,
                    provider="openai",
                    tier=tier,
                    prompt_tokens=500,
                    completion_tokens=100,
                    cost_usd=cost,
                )
            )
    LLMRequest.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


def diurnal(i: int) -> int:
    """2–6 requests an hour, busier in the working day (hour index 0 is midnight UTC when `end` is)."""
    return 2 + (4 if 8 <= i % 24 < 18 else 0)
