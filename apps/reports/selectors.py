"""Reads behind the dashboard, the reports and /api/spend/.

Everything here reads the rollups (`cost_daily_summary`, `route_daily_summary`), never the month's
detail rows, so a dashboard costs a handful of small queries whatever the traffic. The exceptions
(the route report and the FOCUS export, which need per-request attributes) live in services.py and
are bounded to one month, read day by day.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from apps.ledger.models import CostDailySummary
from apps.ledger.money import ZERO
from apps.reports.periods import Month
from apps.tenancy.access import Scope
from apps.tenancy.models import Member, Organization, Team
from finops import clock

if TYPE_CHECKING:
    from apps.budgets.selectors import BudgetStatus


def scope_sql(scope: Scope, params: dict, *, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    sql = ""
    if scope.org_id is not None:
        sql += f" AND {prefix}org_id = %(scope_org)s"
        params["scope_org"] = scope.org_id
    if scope.team_id is not None:
        sql += f" AND {prefix}team_id = %(scope_team)s"
        params["scope_team"] = scope.team_id
    return sql


# --- spend from cost_daily_summary ------------------------------------------------------------


@dataclass
class Totals:
    cost: Decimal = ZERO
    saved: Decimal = ZERO
    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.requests if self.requests else None


@dataclass
class BreakdownRow:
    key: int | str | None
    label: str
    current: Totals
    previous: Totals
    share: float = 0.0  # of the current period's cost in scope

    @property
    def change_pct(self) -> float | None:
        if not self.previous.cost:
            return None
        return float((self.current.cost - self.previous.cost) / self.previous.cost * 100)


@dataclass
class SpendOverview:
    scope: Scope
    month: Month
    through: dt.date  # last day with data that counts (today for the current month)
    current: Totals
    previous: Totals
    previous_same_point: Totals  # previous month up to the same day of month: the fair MTD comparison
    daily: list[tuple[dt.date, Totals]]  # every day of `month`
    previous_daily: list[tuple[dt.date, Totals]]
    orgs: list[BreakdownRow]
    teams: list[BreakdownRow]
    users: list[BreakdownRow]
    models: list[BreakdownRow]
    endpoints: list[BreakdownRow] = field(default_factory=list)  # by API: chat_completions, responses, messages, embeddings

    @property
    def forecast(self) -> Decimal:
        """Month-end spend at the month-to-date daily rate (linear); the full figure for a closed month."""
        return month_forecast(spent=self.current.cost, month=self.month)


def month_forecast(*, spent: Decimal, month: Month, now: dt.datetime | None = None) -> Decimal:
    """Linear extrapolation of month-to-date spend to the month's end; `spent` itself once the month is over.

    Today counts as the fraction of it that has passed, so a morning does not drag the rate down.
    """
    now = now or clock.now()
    if now >= month.end_at:
        return spent
    elapsed = Decimal((now - month.start_at).total_seconds()) / 86400
    if elapsed <= 0:
        return spent
    return spent * month.length_days / max(elapsed, Decimal("0.04"))


SUMMARY_SQL = """
WITH s AS (
    SELECT date, org_id, team_id, user_id, model, endpoint, date >= %(cur)s AS cur,
           cost_usd, saved_usd, requests, cache_hits, errors, prompt_tokens, completion_tokens, cached_tokens
    FROM cost_daily_summary
    WHERE date >= %(prev)s AND date < %(end)s {scope}
)
SELECT {groupings}, date, cur, {columns},
       sum(cost_usd), sum(saved_usd), sum(requests), sum(cache_hits), sum(errors),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens)
FROM s
GROUP BY GROUPING SETS ({sets})
"""
# Only the breakdowns a scope shows: each grouping set is another pass of sums over the rows.
SUMMARY_DIMENSIONS = {
    "all": ("org_id", "team_id", "model", "endpoint"),
    "org": ("team_id", "user_id", "model", "endpoint"),
    "team": ("user_id", "model", "endpoint"),
}
ALL_DIMENSIONS = ("org_id", "team_id", "user_id", "model", "endpoint")


def _summary_sql(level: str) -> str:
    dims = SUMMARY_DIMENSIONS[level]
    # A column in no grouping set can be neither selected nor passed to GROUPING(): constants stand in.
    groupings = ", ".join(["GROUPING(date)"] + [f"GROUPING({d})" if d in dims else "1" for d in ALL_DIMENSIONS])
    columns = ", ".join(d if d in dims else f"NULL AS {d}" for d in ALL_DIMENSIONS)
    sets = ", ".join(["(date)"] + [f"(cur, {d})" for d in dims])
    return SUMMARY_SQL.replace("{groupings}", groupings).replace("{columns}", columns).replace("{sets}", sets)


def _totals(row) -> Totals:
    return Totals(
        cost=row[0] or ZERO,
        saved=row[1] or ZERO,
        requests=int(row[2] or 0),
        cache_hits=int(row[3] or 0),
        errors=int(row[4] or 0),
        prompt_tokens=int(row[5] or 0),
        completion_tokens=int(row[6] or 0),
        cached_tokens=int(row[7] or 0),
    )


def spend_overview(*, scope: Scope, month: Month, today: dt.date | None = None) -> SpendOverview:
    """Month-to-date and previous-month spend in `scope`, by day, org, team, user and model.

    One scan of the rollup (GROUPING SETS) plus one small name lookup per dimension.
    """
    today = today or clock.today()
    previous = month.previous
    through = min(today, month.end - dt.timedelta(days=1))
    params: dict = {"cur": month.start, "prev": previous.start, "end": min(month.end, today + dt.timedelta(days=1))}
    sql = _summary_sql(scope.level).replace("{scope}", scope_sql(scope, params))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    by_day: dict[dt.date, Totals] = {}
    dims: dict[str, dict[Any, dict[bool, Totals]]] = {"org": {}, "team": {}, "user": {}, "model": {}, "endpoint": {}}
    for g_date, g_org, g_team, g_user, g_model, g_endpoint, day, cur, org_id, team_id, user_id, model, endpoint, *sums in rows:
        totals = _totals(sums)
        if not g_date:
            by_day[day] = totals
        elif not g_org:
            dims["org"].setdefault(org_id, {})[cur] = totals
        elif not g_team:
            dims["team"].setdefault(team_id, {})[cur] = totals
        elif not g_user:
            dims["user"].setdefault(user_id, {})[cur] = totals
        elif not g_model:
            dims["model"].setdefault(model, {})[cur] = totals
        elif not g_endpoint:
            dims["endpoint"].setdefault(endpoint, {})[cur] = totals

    current, prev_total, same_point = Totals(), Totals(), Totals()
    cutoff_day = through.day
    for day, totals in by_day.items():
        if day >= month.start:
            current.add(totals)
        else:
            prev_total.add(totals)
            if day.day <= cutoff_day:
                same_point.add(totals)

    def breakdown(name: str, labels: dict) -> list[BreakdownRow]:
        out = []
        for key, periods in dims[name].items():
            cur_totals = periods.get(True, Totals())
            out.append(
                BreakdownRow(
                    key=key,
                    label=labels.get(key, "(none)" if key is None else str(key)),
                    current=cur_totals,
                    previous=periods.get(False, Totals()),
                    share=float(cur_totals.cost / current.cost) if current.cost else 0.0,
                )
            )
        out.sort(key=lambda r: (-r.current.cost, -r.previous.cost, r.label))
        return out

    org_ids = [k for k in dims["org"] if k is not None]
    team_ids = [k for k in dims["team"] if k is not None]
    user_ids = [k for k in dims["user"] if k is not None]
    org_labels = dict(Organization.objects.filter(id__in=org_ids).values_list("id", "name")) if org_ids else {}
    team_labels = (
        {
            t["id"]: f"{t['org__name']} › {t['name']}"
            for t in Team.objects.filter(id__in=team_ids).values("id", "name", "org__name")
        }
        if team_ids
        else {}
    )
    user_labels = dict(Member.objects.filter(id__in=user_ids).values_list("id", "username")) if user_ids else {}

    def series(m: Month) -> list[tuple[dt.date, Totals]]:
        return [(day, by_day.get(day, Totals())) for day in m.days()]

    return SpendOverview(
        scope=scope,
        month=month,
        through=through,
        current=current,
        previous=prev_total,
        previous_same_point=same_point,
        daily=series(month),
        previous_daily=series(previous),
        orgs=breakdown("org", org_labels),
        teams=breakdown("team", team_labels),
        users=breakdown("user", user_labels),
        models=breakdown("model", {}),
        endpoints=breakdown("endpoint", {}),
    )


# --- budgets (apps.budgets) ----------------------------------------------------------------------


@dataclass
class BudgetView:
    status: BudgetStatus
    cumulative: list[Decimal] | None = None  # ledger spend per day of the period, cumulated (monthly budgets)

    @property
    def budget(self):
        return self.status.budget

    @property
    def forecast_ratio(self) -> float | None:
        cap = self.budget.cap_usd
        return float(self.status.forecast_usd / cap) if cap else None


BURN_SQL = """
SELECT GROUPING(org_id), GROUPING(team_id), GROUPING(user_id), date, org_id, team_id, user_id, sum(cost_usd)
FROM cost_daily_summary
WHERE date >= %(start)s AND date < %(end)s
  AND (org_id = ANY(%(orgs)s) OR team_id = ANY(%(teams)s) OR user_id = ANY(%(users)s))
GROUP BY GROUPING SETS ((date, org_id), (date, team_id), (date, user_id))
"""


def budget_views(*, scope: Scope, month: Month, charts: int = 4, limit: int = 25) -> list[BudgetView]:
    """Active budgets in scope with their live counters; the first `charts` monthly ones get a burn-down series.

    Empty when apps.budgets is not installed. Budgets are only meaningful for the period in progress.
    """
    try:
        from apps.budgets.selectors import budget_status_list
    except ImportError:  # pragma: no cover - the budgets app is optional for reports
        return []
    statuses = budget_status_list(org_id=scope.org_id, include_all_orgs=scope.org_id is None)
    if scope.team_id is not None:
        statuses = [
            s for s in statuses
            if s.budget.scope == "org" or s.budget.team_id == scope.team_id
            or (s.budget.member is not None and s.budget.member.team_id == scope.team_id)
        ]  # fmt: skip
    views = [BudgetView(status=s) for s in statuses]
    views.sort(key=lambda v: (-(v.forecast_ratio or 0), v.budget.id))
    views = views[:limit]
    monthly = [v for v in views if v.budget.period == "monthly"][:charts]
    if not monthly:
        return views
    orgs = [v.budget.org_id for v in monthly if v.budget.scope == "org"]
    teams = [v.budget.team_id for v in monthly if v.budget.scope == "team"]
    users = [v.budget.member_id for v in monthly if v.budget.scope == "user"]
    today = clock.today()
    params: dict[str, Any] = {
        "start": month.start,
        "end": min(month.end, today + dt.timedelta(days=1)),
        "orgs": orgs,
        "teams": teams,
        "users": users,
    }
    with connection.cursor() as cursor:
        cursor.execute(BURN_SQL, params)
        rows = cursor.fetchall()
    daily: dict[tuple[str, int], dict[dt.date, Decimal]] = defaultdict(dict)
    for g_org, g_team, g_user, day, org_id, team_id, user_id, cost in rows:
        if not g_org and org_id is not None:
            daily[("org", org_id)][day] = cost
        elif not g_team and team_id is not None:
            daily[("team", team_id)][day] = cost
        elif not g_user and user_id is not None:
            daily[("user", user_id)][day] = cost
    last = min(today, month.end - dt.timedelta(days=1))
    for view in monthly:
        target_id = {"org": view.budget.org_id, "team": view.budget.team_id, "user": view.budget.member_id}[view.budget.scope]
        per_day = daily.get((view.budget.scope, target_id), {})
        running, cumulative = ZERO, []
        for day in month.days():
            if day > last:
                break
            running += per_day.get(day, ZERO)
            cumulative.append(running)
        view.cumulative = cumulative
    return views


# --- anomalies (apps.anomalies) ----------------------------------------------------------------


def anomaly_queryset(*, scope: Scope):
    """Anomalies visible in `scope`. Org-less (cross-tenant, per-model) anomalies are for the global scope only."""
    from apps.anomalies.models import Anomaly

    queryset = Anomaly.objects.select_related("org", "team")
    if scope.org_id is not None:
        queryset = queryset.filter(org_id=scope.org_id)
    if scope.team_id is not None:
        queryset = queryset.filter(team_id=scope.team_id)
    return queryset


@dataclass
class AnomalySummary:
    items: list
    counts: dict[str, int]  # open anomalies by severity
    total_impact: Decimal

    @property
    def open_total(self) -> int:
        return sum(self.counts.values())


def open_anomalies(*, scope: Scope, limit: int = 8) -> AnomalySummary | None:
    """The open anomalies in scope, worst impact first; None when apps.anomalies is not installed."""
    try:
        from apps.anomalies.models import Anomaly
    except ImportError:  # pragma: no cover
        return None
    queryset = anomaly_queryset(scope=scope).filter(status=Anomaly.Status.OPEN)
    stats = queryset.values("severity").annotate(n=Count("id"), impact=Coalesce(Sum("impact_usd"), ZERO)).order_by()
    counts = {row["severity"]: row["n"] for row in stats}
    impact = sum((row["impact"] for row in stats), ZERO)
    items = list(queryset.order_by("-impact_usd", "-window_start")[:limit]) if counts else []
    return AnomalySummary(items=items, counts=counts, total_impact=impact)


# --- /api/spend/ and cost_report from the rollup -----------------------------------------------

GROUP_FIELDS = {
    "day": ("date",),
    "org": ("org_id", "org__slug", "org__name"),
    "team": ("team_id", "team__slug", "team__name", "org__slug"),
    "user": ("user_id", "user__username", "team__slug", "org__slug"),
    "model": ("model",),
}


@dataclass
class SpendRow:
    key: str
    label: str
    totals: Totals
    org: str | None = None
    team: str | None = None


def spend_rows(*, scope: Scope, group_by: str, start: dt.date, end: dt.date) -> list[SpendRow]:
    """Spend in scope over [start, end) grouped by day / org / team / user / model, from the rollup.

    Days with no spend are included (as zeros) when grouping by day, so a time series has no gaps.
    """
    fields = GROUP_FIELDS[group_by]
    queryset = scope.filter(CostDailySummary.objects.filter(date__gte=start, date__lt=end))
    rows = (
        queryset.values(*fields)
        .annotate(
            cost=Sum("cost_usd"),
            saved=Sum("saved_usd"),
            n=Sum("requests"),
            hits=Sum("cache_hits"),
            errs=Sum("errors"),
            pt=Sum("prompt_tokens"),
            ct=Sum("completion_tokens"),
            cached=Sum("cached_tokens"),
        )
        .order_by()
    )
    out: list[SpendRow] = []
    for row in rows:
        totals = _totals([row["cost"], row["saved"], row["n"], row["hits"], row["errs"], row["pt"], row["ct"], row["cached"]])
        if group_by == "day":
            out.append(SpendRow(key=row["date"].isoformat(), label=row["date"].isoformat(), totals=totals))
        elif group_by == "org":
            out.append(
                SpendRow(key=row["org__slug"] or "", label=row["org__name"] or "(none)", totals=totals, org=row["org__slug"])
            )
        elif group_by == "team":
            slug = row["team__slug"]
            key = f"{row['org__slug']}/{slug}" if slug else ""
            out.append(SpendRow(key=key, label=row["team__name"] or "(none)", totals=totals, org=row["org__slug"], team=slug))
        elif group_by == "user":
            name = row["user__username"]
            key = f"{row['org__slug']}/{name}" if name else ""
            out.append(SpendRow(key=key, label=name or "(none)", totals=totals, org=row["org__slug"], team=row["team__slug"]))
        else:
            out.append(SpendRow(key=row["model"], label=row["model"], totals=totals))
    if group_by == "day":
        present = {row.key: row for row in out}
        out = []
        day = start
        while day < end:
            out.append(present.get(day.isoformat()) or SpendRow(key=day.isoformat(), label=day.isoformat(), totals=Totals()))
            day += dt.timedelta(days=1)
        return out
    out.sort(key=lambda r: (-r.totals.cost, r.key))
    return out


# --- API keys ---------------------------------------------------------------------------------


def api_key_spend(*, api_keys: list, month: Month) -> dict[int, tuple[Decimal, int]]:
    """(cost, requests) per API key for the month, for one admin page of keys.

    A member with a single key spent exactly what that key spent, so those come from the daily
    rollup (by user, refreshed hourly). Only keys of members holding several keys are summed from
    llm_requests, bounded to the month and to those keys (the (api_key, received_at) index):
    summing a month of detail rows for every key would scan the whole month (seconds at 1.5M rows).
    """
    from apps.ledger.models import LLMRequest
    from apps.tenancy.models import ApiKey

    if not api_keys:
        return {}
    member_ids = {key.member_id for key in api_keys}
    keys_per_member = dict(
        ApiKey.objects.filter(member_id__in=member_ids).values("member_id").annotate(n=Count("id")).values_list("member_id", "n")
    )
    single = {key.member_id: key.id for key in api_keys if keys_per_member.get(key.member_id) == 1}
    shared = [key.id for key in api_keys if key.member_id not in single]
    out: dict[int, tuple[Decimal, int]] = {}
    if single:
        rows = (
            CostDailySummary.objects.filter(user_id__in=single, date__gte=month.start, date__lt=month.end)
            .values("user_id")
            .annotate(cost=Sum("cost_usd"), n=Sum("requests"))
            .order_by()
        )
        for row in rows:
            out[single[row["user_id"]]] = (row["cost"] or ZERO, int(row["n"] or 0))
    if shared:
        key_rows = (
            LLMRequest.objects.filter(api_key_id__in=shared, received_at__gte=month.start_at, received_at__lt=month.end_at)
            .values("api_key_id")
            .annotate(cost=Sum("cost_usd"), n=Count("id"))
            .order_by()
        )
        for key_row in key_rows:
            out[key_row["api_key_id"]] = (key_row["cost"] or ZERO, key_row["n"])
    return out
