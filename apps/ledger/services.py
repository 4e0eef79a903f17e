from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from apps.ledger.models import ModelPrice
from finops import clock
from finops.cache import rollup_generation_bump

logger = logging.getLogger(__name__)


# --- prices ---------------------------------------------------------------------------------


def _per_1m(value: Any) -> Decimal | None:
    """LiteLLM prices are per token; ours are per 1M tokens."""
    if value in (None, ""):
        return None
    try:
        return (Decimal(str(value)) * 1_000_000).quantize(Decimal("0.000001"))
    except InvalidOperation:
        return None


def price_upsert(
    *,
    provider: str,
    model: str,
    input_per_1m: Decimal,
    output_per_1m: Decimal,
    cached_input_per_1m: Decimal | None,
    effective_from: dt.date,
    source: str = "",
    cache_write_per_1m: Decimal | None = None,
    priority_multiplier: Decimal | None = None,
    kind: str = "chat",
) -> tuple[ModelPrice, bool]:
    """Insert a dated price; a changed price for a model closes the previous row's window."""
    with transaction.atomic():
        existing = ModelPrice.objects.select_for_update().filter(model=model, effective_from=effective_from).first()
        if existing:
            existing.provider = provider
            existing.input_per_1m = input_per_1m
            existing.output_per_1m = output_per_1m
            existing.cached_input_per_1m = cached_input_per_1m
            existing.cache_write_per_1m = cache_write_per_1m
            existing.priority_multiplier = priority_multiplier
            existing.source = source or existing.source
            existing.kind = kind
            existing.save()
            return existing, False
        previous = (
            ModelPrice.objects.select_for_update()
            .filter(model=model, effective_from__lt=effective_from, effective_to__isnull=True)
            .order_by("-effective_from")
            .first()
        )
        if previous:
            same = (
                previous.input_per_1m, previous.output_per_1m, previous.cached_input_per_1m, previous.cache_write_per_1m,
                previous.priority_multiplier,
            ) == (input_per_1m, output_per_1m, cached_input_per_1m, cache_write_per_1m, priority_multiplier)  # fmt: skip
            if same and previous.kind == kind:
                return previous, False
            previous.effective_to = effective_from
            previous.save(update_fields=["effective_to"])
        row = ModelPrice.objects.create(
            provider=provider,
            model=model,
            input_per_1m=input_per_1m,
            output_per_1m=output_per_1m,
            cached_input_per_1m=cached_input_per_1m,
            cache_write_per_1m=cache_write_per_1m,
            priority_multiplier=priority_multiplier,
            effective_from=effective_from,
            source=source,
            kind=kind,
        )
        return row, True


def prices_load_fixture(*, path: Path) -> int:
    """Load `fixtures/prices.json` (our own format, per 1M tokens)."""
    data = json.loads(path.read_text())
    created = 0
    for item in data["prices"]:
        _, was_created = price_upsert(
            provider=item["provider"],
            model=item["model"],
            input_per_1m=Decimal(item["input_per_1m"]),
            output_per_1m=Decimal(item["output_per_1m"]),
            cached_input_per_1m=None if item.get("cached_input_per_1m") is None else Decimal(item["cached_input_per_1m"]),
            cache_write_per_1m=None if item.get("cache_write_per_1m") is None else Decimal(item["cache_write_per_1m"]),
            priority_multiplier=None if item.get("priority_multiplier") is None else Decimal(item["priority_multiplier"]),
            effective_from=dt.date.fromisoformat(item["effective_from"]),
            source=item.get("source", ""),
            kind=item.get("kind", "chat"),
        )
        created += was_created
    return created


def prices_import_litellm(*, data: dict[str, Any], effective_from: dt.date, source: str) -> tuple[int, list[str]]:
    """Import LiteLLM's `model_prices_and_context_window.json` (prices per token).

    Entries without both input and output prices, and non-chat modes, are skipped and reported.
    """
    created = 0
    skipped: list[str] = []
    for model, spec in data.items():
        if model == "sample_spec" or not isinstance(spec, dict):
            continue
        if spec.get("mode") not in (None, "chat", "completion", "embedding", "responses"):
            skipped.append(f"{model}: mode {spec.get('mode')}")
            continue
        input_price = _per_1m(spec.get("input_cost_per_token"))
        output_price = _per_1m(spec.get("output_cost_per_token", 0 if spec.get("mode") == "embedding" else None))
        if input_price is None or output_price is None:
            skipped.append(f"{model}: no input/output price")
            continue
        _, was_created = price_upsert(
            provider=str(spec.get("litellm_provider") or "unknown")[:64],
            model=model[:128],
            input_per_1m=input_price,
            output_per_1m=output_price,
            cached_input_per_1m=_per_1m(spec.get("cache_read_input_token_cost")),
            cache_write_per_1m=_per_1m(spec.get("cache_creation_input_token_cost")),
            effective_from=effective_from,
            source=source,
            kind="embedding" if spec.get("mode") == "embedding" else "chat",
        )
        created += was_created
    return created, skipped


# --- rollup ---------------------------------------------------------------------------------

ROLLUP_SQL = """
WITH fresh AS (
    SELECT (r.received_at AT TIME ZONE 'UTC')::date AS date,
           r.model, r.endpoint, r.member_id AS user_id,
           max(r.org_id) AS org_id, max(r.team_id) AS team_id,
           count(*) AS requests,
           count(*) FILTER (WHERE r.status IN ('rejected', 'failed')) AS errors,
           count(*) FILTER (WHERE r.cache_status IN ('exact', 'semantic')) AS cache_hits,
           count(*) FILTER (WHERE r.budget_state = 'fail_open') AS fail_open,
           coalesce(sum(r.prompt_tokens), 0) AS prompt_tokens,
           coalesce(sum(r.completion_tokens), 0) AS completion_tokens,
           coalesce(sum(r.cached_tokens), 0) AS cached_tokens,
           coalesce(sum(r.cost_usd), 0) AS cost_usd,
           coalesce(sum(r.saved_usd), 0) AS saved_usd
    FROM llm_requests r
    WHERE r.received_at >= %(start)s AND r.received_at < %(end)s
    GROUP BY 1, 2, 3, 4
),
-- Summary keys whose detail rows are gone (e.g. a deleted test org) must not linger.
-- Same snapshot as the INSERT below, and a disjoint set of keys, so the two never collide.
pruned AS (
    DELETE FROM cost_daily_summary s
    WHERE s.date >= %(start_date)s AND s.date < %(end_date)s
      AND NOT EXISTS (
        SELECT 1 FROM fresh f
        WHERE f.date = s.date AND f.model = s.model AND f.endpoint = s.endpoint
          AND f.user_id IS NOT DISTINCT FROM s.user_id
      )
)
INSERT INTO cost_daily_summary AS s
    (date, model, endpoint, user_id, org_id, team_id, requests, errors, cache_hits, fail_open,
     prompt_tokens, completion_tokens, cached_tokens, cost_usd, saved_usd, updated_at)
SELECT date, model, endpoint, user_id, org_id, team_id, requests, errors, cache_hits, fail_open,
       prompt_tokens, completion_tokens, cached_tokens, cost_usd, saved_usd, now()
FROM fresh
ON CONFLICT (date, model, endpoint, user_id) DO UPDATE SET
    org_id = EXCLUDED.org_id, team_id = EXCLUDED.team_id,
    requests = EXCLUDED.requests, errors = EXCLUDED.errors, cache_hits = EXCLUDED.cache_hits,
    fail_open = EXCLUDED.fail_open, prompt_tokens = EXCLUDED.prompt_tokens,
    completion_tokens = EXCLUDED.completion_tokens, cached_tokens = EXCLUDED.cached_tokens,
    cost_usd = EXCLUDED.cost_usd, saved_usd = EXCLUDED.saved_usd, updated_at = EXCLUDED.updated_at
-- A re-run that changes nothing writes nothing (and keeps updated_at).
WHERE (s.org_id, s.team_id, s.requests, s.errors, s.cache_hits, s.fail_open, s.prompt_tokens,
       s.completion_tokens, s.cached_tokens, s.cost_usd, s.saved_usd)
      IS DISTINCT FROM
      (EXCLUDED.org_id, EXCLUDED.team_id, EXCLUDED.requests, EXCLUDED.errors, EXCLUDED.cache_hits,
       EXCLUDED.fail_open, EXCLUDED.prompt_tokens, EXCLUDED.completion_tokens, EXCLUDED.cached_tokens,
       EXCLUDED.cost_usd, EXCLUDED.saved_usd)
"""

def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def cost_rollup(*, since: dt.date, until: dt.date | None = None) -> int:
    """Recompute cost_daily_summary for the days [since, until] (inclusive) from llm_requests.

    Idempotent, and safe to run concurrently with itself: each day is rewritten by one
    INSERT … SELECT … ON CONFLICT DO UPDATE, so two runs converge on the same rows.
    Returns the number of summary rows written (inserted or changed).
    """
    until = until or clock.today()
    params = {
        "start": _day_start(since),
        "end": _day_start(until + dt.timedelta(days=1)),
        "start_date": since,
        "end_date": until + dt.timedelta(days=1),
    }
    with connection.cursor() as cursor:  # one statement: atomic on its own
        cursor.execute(ROLLUP_SQL, params)
        written = cursor.rowcount
    rollup_generation_bump()  # the dashboards' cached aggregates (apps.reports) are recomputed
    return written


# A row's recorded_at is the start of the transaction that inserted it (now()), so a row can commit a little after a
# later-starting run has read past it: each run reads back this far behind its watermark (a recompute is idempotent).
ROLLUP_WATERMARK_OVERLAP = dt.timedelta(minutes=10)


def rollup_days_pending(*, name: str) -> tuple[list[tuple[dt.date, dt.date]], dt.datetime]:
    """The day ranges a rollup of `name` must recompute — today, yesterday, and every day that received a row since
    its last run (by recorded_at) — and the watermark to store once they are written (the database's clock, as
    recorded_at is). The first run has no watermark: today and yesterday only."""
    from apps.ledger.models import RollupWatermark

    today = clock.today()
    days = {today - dt.timedelta(days=1), today}
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (mark,) = cursor.fetchone()
        since = RollupWatermark.objects.filter(name=name).values_list("recorded_through", flat=True).first()
        if since is not None:
            cursor.execute(
                "SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM llm_requests WHERE recorded_at >= %s",
                [since - ROLLUP_WATERMARK_OVERLAP],
            )
            days.update(day for (day,) in cursor.fetchall())
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):  # consecutive days in one statement
        if ranges and ranges[-1][1] + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges, mark


def rollup_watermark_advance(*, name: str, mark: dt.datetime) -> None:
    """Store `mark` as `name`'s watermark, never moving it back (two runs may finish out of order)."""
    from apps.ledger.models import RollupWatermark

    if not RollupWatermark.objects.filter(name=name, recorded_through__lt=mark).update(recorded_through=mark):
        RollupWatermark.objects.get_or_create(name=name, defaults={"recorded_through": mark})


def cost_rollup_hourly() -> int:
    """The beat job: today, yesterday and every day that received late rows since the last run (by recorded_at)."""
    ranges, mark = rollup_days_pending(name="cost_daily_summary")
    written = sum(cost_rollup(since=since, until=until) for since, until in ranges)
    rollup_watermark_advance(name="cost_daily_summary", mark=mark)
    return written


def cost_rollup_days(*, since: dt.date, until: dt.date | None = None) -> Iterable[tuple[dt.date, int]]:
    """Day-by-day backfill, so a progress bar can follow along."""
    until = until or clock.today()
    day = since
    while day <= until:
        yield day, cost_rollup(since=day, until=day)
        day += dt.timedelta(days=1)
