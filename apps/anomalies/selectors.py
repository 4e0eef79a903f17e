"""Anomaly reads: the hourly series a scan works on, and the gauges for /metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from django.db import connection

# Scope kinds, in the order GROUPING() numbers them below (bit set = column rolled up).
SCOPE_ORG, SCOPE_TEAM, SCOPE_MODEL = "org", "team", "model"
PREMIUM_TIER = "premium"

# One statement per scan: the detail rows of the look-back window aggregated per hour at the org,
# team and model level at once (a single pass over llm_requests, then GROUPING SETS), each scope then
# crossed with generate_series so hours without traffic come back as explicit zeros, ordered so
# that every scope is one contiguous block of `hours` rows.
HOURLY_SERIES_SQL = """
WITH base AS (
    -- One pass over the detail rows, to the finest grain needed; the three scope levels are then
    -- rolled up from this small set instead of hashing the detail rows three times.
    SELECT date_trunc('hour', received_at) AS hour, org_id, team_id, model,
           SUM(cost_usd) AS cost,
           COUNT(*) AS requests,
           SUM(prompt_tokens + completion_tokens) AS tokens,
           SUM(cost_usd) FILTER (WHERE tier = %(premium)s) AS premium_cost
    FROM llm_requests
    WHERE received_at >= %(start)s AND received_at < %(end)s AND org_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
), agg AS (
    SELECT hour,
           GROUPING(org_id, team_id, model) AS g,
           COALESCE(org_id, 0) AS org_id, COALESCE(team_id, 0) AS team_id, COALESCE(model, '') AS model,
           SUM(cost)::float8 AS cost,
           SUM(requests)::float8 AS requests,
           SUM(tokens)::float8 AS tokens,
           COALESCE(SUM(premium_cost), 0)::float8 AS premium_cost
    FROM base
    GROUP BY GROUPING SETS ((hour, org_id), (hour, org_id, team_id), (hour, model))
), scopes AS (
    SELECT DISTINCT g, org_id, team_id, model FROM agg
), hours AS (
    SELECT generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') AS hour
)
SELECT s.g, s.org_id, s.team_id, s.model,
       COALESCE(a.cost, 0), COALESCE(a.requests, 0), COALESCE(a.tokens, 0), COALESCE(a.premium_cost, 0)
FROM scopes s
CROSS JOIN hours h
LEFT JOIN agg a ON a.hour = h.hour AND a.g = s.g AND a.org_id = s.org_id AND a.team_id = s.team_id AND a.model = s.model
ORDER BY s.g, s.org_id, s.team_id, s.model, h.hour
"""

# GROUPING(org_id, team_id, model): bit 2 org, bit 1 team, bit 0 model rolled up.
_GROUPING = {0b011: SCOPE_ORG, 0b001: SCOPE_TEAM, 0b110: SCOPE_MODEL}


@dataclass
class HourlySeries:
    """Dense hourly series, one row per scope: arrays of shape (scopes, hours)."""

    start: dt.datetime  # first hour (inclusive)
    hours: int
    scope_type: list[str]
    org_id: list[int | None]
    team_id: list[int | None]
    model: list[str]
    cost: np.ndarray
    requests: np.ndarray
    tokens: np.ndarray
    premium_cost: np.ndarray

    def __len__(self) -> int:
        return len(self.scope_type)

    def hour_at(self, index: int) -> dt.datetime:
        return self.start + dt.timedelta(hours=index)

    @property
    def tokens_per_request(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.requests > 0, self.tokens / np.maximum(self.requests, 1), np.nan)

    @property
    def premium_share(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.cost > 0, self.premium_cost / np.where(self.cost > 0, self.cost, 1), np.nan)


def hourly_series(*, start: dt.datetime, end: dt.datetime) -> HourlySeries:
    """Hourly cost, requests, tokens and premium spend per org, team and model over [start, end)."""
    if start.minute or start.second or start.microsecond or end.minute or end.second or end.microsecond:
        raise ValueError("hourly_series needs whole hours")
    hours = int((end - start).total_seconds() // 3600)
    with connection.cursor() as cursor:
        cursor.execute(HOURLY_SERIES_SQL, {"start": start, "end": end, "premium": PREMIUM_TIER})
        rows = cursor.fetchall()
    n_scopes = len(rows) // hours if hours else 0
    empty = np.zeros((n_scopes, hours))
    if not n_scopes:
        return HourlySeries(start, hours, [], [], [], [], empty, empty, empty, empty)
    heads = rows[::hours]
    values = np.array([r[4:8] for r in rows], dtype=np.float64).reshape(n_scopes, hours, 4)
    scope_type = [_GROUPING[g] for g, *_ in heads]
    return HourlySeries(
        start=start,
        hours=hours,
        scope_type=scope_type,
        org_id=[h[1] if kind != SCOPE_MODEL else None for kind, h in zip(scope_type, heads, strict=True)],
        team_id=[h[2] if kind == SCOPE_TEAM else None for kind, h in zip(scope_type, heads, strict=True)],
        model=[h[3] if kind == SCOPE_MODEL else "" for kind, h in zip(scope_type, heads, strict=True)],
        cost=values[:, :, 0],
        requests=values[:, :, 1],
        tokens=values[:, :, 2],
        premium_cost=values[:, :, 3],
    )


def scope_labels(*, org_ids: set[int], team_ids: set[int]) -> tuple[dict[int, str], dict[int, str]]:
    from apps.tenancy.models import Organization, Team

    orgs = dict(Organization.objects.filter(id__in=org_ids).values_list("id", "slug"))
    teams = {t.id: f"{t.org.slug}/{t.slug}" for t in Team.objects.filter(id__in=team_ids).select_related("org")}
    return orgs, teams
