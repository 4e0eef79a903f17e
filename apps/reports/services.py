"""Reports: the route rollup, cost reports, chargeback and the FOCUS export.

The route report and the FOCUS export need per-request attributes (route, escalation, price row)
that the daily rollup does not keep, so they read llm_requests, one UTC day per query: each query is
bounded by the BRIN index on received_at, and a progress bar can follow along.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from django.db import connection
from django.db.models import Q, Sum

from apps.ledger.models import CostDailySummary, ModelPrice
from apps.ledger.money import CAP_DECIMAL_PLACES, ZERO, quantize_usd
from apps.ledger.pricing import PriceBook, cost_compute
from apps.ledger.selectors import price_book
from apps.ledger.services import rollup_days_pending, rollup_watermark_advance
from apps.reports import focus
from apps.reports.periods import Month, day_start
from apps.reports.routing_savings import ROUTED_STRATEGIES, premium_reference_model
from apps.reports.selectors import spend_rows
from apps.tenancy.access import GLOBAL, Scope, org_scope
from apps.tenancy.models import Organization, Team
from finops import clock
from finops.cache import rollup_generation_bump
from finops.errors import BadRequest

Progress = Callable[[int], None]

# --- route rollup ----------------------------------------------------------------------------

ROUTE_ROLLUP_SQL = """
WITH fresh AS (
    SELECT (r.received_at AT TIME ZONE 'UTC')::date AS date, r.org_id, r.team_id, r.model, r.tier, r.route_strategy,
           count(*) AS requests,
           count(*) FILTER (WHERE r.status IN ('served', 'disconnected')) AS answered,
           count(*) FILTER (WHERE r.escalated) AS escalations,
           coalesce(sum(r.prompt_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0) AS prompt_tokens,
           coalesce(sum(r.completion_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0) AS completion_tokens,
           coalesce(sum(r.cached_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0) AS cached_tokens,
           coalesce(sum(r.cost_usd), 0) AS cost_usd,
           coalesce(sum(r.escalation_cost_usd), 0) AS escalation_cost_usd
    FROM llm_requests r
    WHERE r.received_at >= %(start)s AND r.received_at < %(end)s
    GROUP BY 1, 2, 3, 4, 5, 6
),
-- Keys whose detail rows are gone must not linger; same snapshot as the INSERT, disjoint keys.
pruned AS (
    DELETE FROM route_daily_summary s
    WHERE s.date >= %(start_date)s AND s.date < %(end_date)s
      AND NOT EXISTS (
        SELECT 1 FROM fresh f
        WHERE f.date = s.date AND f.model = s.model AND f.tier = s.tier AND f.route_strategy = s.route_strategy
          AND f.org_id IS NOT DISTINCT FROM s.org_id AND f.team_id IS NOT DISTINCT FROM s.team_id
      )
)
INSERT INTO route_daily_summary AS s
    (date, org_id, team_id, model, tier, route_strategy, requests, answered, escalations,
     prompt_tokens, completion_tokens, cached_tokens, cost_usd, escalation_cost_usd, updated_at)
SELECT date, org_id, team_id, model, tier, route_strategy, requests, answered, escalations,
       prompt_tokens, completion_tokens, cached_tokens, cost_usd, escalation_cost_usd, now()
FROM fresh
ON CONFLICT (date, org_id, team_id, model, tier, route_strategy) DO UPDATE SET
    requests = EXCLUDED.requests, answered = EXCLUDED.answered, escalations = EXCLUDED.escalations,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    cached_tokens = EXCLUDED.cached_tokens, cost_usd = EXCLUDED.cost_usd,
    escalation_cost_usd = EXCLUDED.escalation_cost_usd, updated_at = EXCLUDED.updated_at
WHERE (s.requests, s.answered, s.escalations, s.prompt_tokens, s.completion_tokens, s.cached_tokens,
       s.cost_usd, s.escalation_cost_usd)
      IS DISTINCT FROM
      (EXCLUDED.requests, EXCLUDED.answered, EXCLUDED.escalations, EXCLUDED.prompt_tokens,
       EXCLUDED.completion_tokens, EXCLUDED.cached_tokens, EXCLUDED.cost_usd, EXCLUDED.escalation_cost_usd)
"""


class TextSink(Protocol):
    """Where a report is written: a text file, stdout or an HttpResponse."""

    def write(self, text: str, /) -> object: ...



def route_rollup(*, since: dt.date, until: dt.date | None = None) -> int:
    """Recompute route_daily_summary for the days [since, until] (inclusive) from llm_requests.

    One INSERT … SELECT … ON CONFLICT DO UPDATE: idempotent, and two concurrent runs converge.
    Returns the number of summary rows written (inserted or changed).
    """
    until = until or clock.today()
    params = {
        "start": day_start(since),
        "end": day_start(until + dt.timedelta(days=1)),
        "start_date": since,
        "end_date": until + dt.timedelta(days=1),
    }
    with connection.cursor() as cursor:
        cursor.execute(ROUTE_ROLLUP_SQL, params)
        written = cursor.rowcount
    rollup_generation_bump()  # the dashboards' cached aggregates are recomputed
    return written


def route_rollup_hourly() -> int:
    """The beat job: today, yesterday and every day that received late rows since the last run (by recorded_at)."""
    ranges, mark = rollup_days_pending(name="route_daily_summary")
    written = sum(route_rollup(since=since, until=until) for since, until in ranges)
    rollup_watermark_advance(name="route_daily_summary", mark=mark)
    return written


def route_rollup_days(*, since: dt.date, until: dt.date | None = None) -> Iterable[tuple[dt.date, int]]:
    """Day-by-day backfill, so a progress bar can follow along."""
    until = until or clock.today()
    day = since
    while day <= until:
        yield day, route_rollup(since=day, until=day)
        day += dt.timedelta(days=1)


# What the `finance` group may do beyond budgets (reports migration 0002 grants the same).
FINANCE_REPORT_PERMISSIONS = {
    "ledger": ["view_llmrequest", "view_costdailysummary", "view_modelprice"],
    "tenancy": ["view_organization", "view_team", "view_member", "view_apikey"],
    "anomalies": ["view_anomaly", "change_anomaly"],
    "reports": ["view_routedailysummary"],
}


def finance_group_reporting_ensure():
    """The `finance` group with the budget permissions plus reading the ledger and triaging anomalies.

    Migrations grant these (budgets 0003, reports 0002); tests that flush tables call this instead.
    """
    from django.contrib.auth.models import Permission

    from apps.budgets.services import finance_group_ensure

    group = finance_group_ensure()
    for label, codenames in FINANCE_REPORT_PERMISSIONS.items():
        group.permissions.add(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))
    return group


# --- tables (cost_report, chargeback) --------------------------------------------------------


@dataclass
class ReportTable:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    totals: list[Any] | None = None  # printed under a table; never written to CSV (it would double every sum)
    notes: list[str] = field(default_factory=list)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def report_write(table: ReportTable, out: TextSink, *, fmt: str) -> None:
    """CSV (exact values) or an aligned text table (money to the cent, with a total line)."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_cell(v) for v in row])
        return
    if fmt != "table":
        raise BadRequest(f"Unknown format {fmt!r}; expected table or csv.", param="format")

    def show(value: Any, column: str) -> str:
        if isinstance(value, Decimal):
            if column.endswith("_pct"):
                return f"{value:.1f}"
            return f"{quantize_usd(value, places=CAP_DECIMAL_PLACES):,}"
        if isinstance(value, int):
            return f"{value:,}"
        return _cell(value)

    body = [[show(v, c) for v, c in zip(row, table.columns, strict=True)] for row in table.rows]
    footer = [show(v, c) for v, c in zip(table.totals, table.columns, strict=True)] if table.totals else None
    widths = [len(c) for c in table.columns]
    for line in [*body, *([footer] if footer else [])]:
        widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]
    numeric = [
        all(isinstance(row[i], int | Decimal) for row in table.rows if row[i] is not None) and bool(table.rows)
        for i in range(len(table.columns))
    ]

    def fmt_line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out.write(f"{table.title}\n")
    out.write(fmt_line(table.columns) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for line in body:
        out.write(fmt_line(line) + "\n")
    if footer:
        out.write("  ".join("-" * w for w in widths) + "\n")
        out.write(fmt_line(footer) + "\n")
    for note in table.notes:
        out.write(f"\n{note}\n")


COST_REPORT_DIMENSIONS = ("org", "team", "user", "model", "route")
_SPEND_COLUMNS = [
    "requests",
    "errors",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "saved_usd",
    "share_pct",
]


def _scope_for_org(org_slug: str | None) -> Scope:
    if not org_slug:
        return GLOBAL
    org = Organization.objects.filter(slug=org_slug).first()
    if org is None:
        raise BadRequest(f"No organization with slug {org_slug!r}.", param="org")
    return org_scope(org)


def cost_report(*, by: str, month: Month, org_slug: str | None = None, progress: Progress | None = None) -> ReportTable:
    """Spend for one month grouped by org / team / user / model (from the rollup) or route (from llm_requests)."""
    if by not in COST_REPORT_DIMENSIONS:
        raise BadRequest(f"Unknown dimension {by!r}; expected one of {', '.join(COST_REPORT_DIMENSIONS)}.", param="by")
    scope = _scope_for_org(org_slug)
    if by == "route":
        return route_report(month=month, scope=scope, progress=progress)
    rows = spend_rows(scope=scope, group_by=by, start=month.start, end=month.end)
    total_cost = sum((r.totals.cost for r in rows), ZERO)
    keys = {
        "org": ["org", "org_name"],
        "team": ["org", "team", "team_name"],
        "user": ["org", "team", "user"],
        "model": ["model"],
    }[by]
    table = ReportTable(
        title=f"Cost by {by}, {month.label} ({scope.label}; UTC; from cost_daily_summary)", columns=keys + _SPEND_COLUMNS
    )
    grand: list[Any] = [0, 0, 0, 0, 0, 0, ZERO, ZERO]
    for row in rows:
        t = row.totals
        key_cells = {
            "org": [row.org or "", row.label],
            "team": [row.org or "", row.team or "", row.label],
            "user": [row.org or "", row.team or "", row.label],
            "model": [row.label],
        }[by]
        values = [t.requests, t.errors, t.cache_hits, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.cost, t.saved]
        grand = [a + b for a, b in zip(grand, values, strict=True)]
        share = quantize_usd(t.cost / total_cost * 100, places=2) if total_cost else Decimal("0.00")
        table.rows.append(key_cells + values + [share])
    table.totals = ["TOTAL"] + [""] * (len(keys) - 1) + grand + [Decimal("100.00") if total_cost else Decimal("0.00")]
    return table


ROUTE_DAY_SQL = """
SELECT r.route_strategy, r.tier, r.model,
       count(*), count(*) FILTER (WHERE r.status IN ('served', 'disconnected')), count(*) FILTER (WHERE r.escalated),
       coalesce(sum(r.prompt_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0),
       coalesce(sum(r.completion_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0),
       coalesce(sum(r.cached_tokens) FILTER (WHERE r.status IN ('served', 'disconnected')), 0),
       coalesce(sum(r.cost_usd), 0), coalesce(sum(r.escalation_cost_usd), 0)
FROM llm_requests r
WHERE r.received_at >= %(start)s AND r.received_at < %(end)s {scope}
GROUP BY 1, 2, 3
"""


def _month_days(month: Month) -> list[dt.date]:
    return month.days_until(clock.today())


def route_report(*, month: Month, scope: Scope, progress: Progress | None = None) -> ReportTable:
    """Cost by routing decision, read day by day from llm_requests, with the premium counterfactual."""
    premium = premium_reference_model(on=month.start)
    premium_prices = price_book(models=[premium]) if premium else PriceBook()
    acc: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, 0, 0, 0, ZERO, ZERO, ZERO, False])
    params: dict = {}
    scope_sql = ""
    if scope.org_id is not None:
        scope_sql = " AND r.org_id = %(org)s"
        params["org"] = scope.org_id
    sql = ROUTE_DAY_SQL.format(scope=scope_sql)
    for day in _month_days(month):
        params.update(start=day_start(day), end=day_start(day + dt.timedelta(days=1)))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        price = premium_prices.price_for(premium, day) if premium else None
        for strategy, tier, _model, n, answered, escalations, prompt, completion, cached, cost, escalation_cost in rows:
            a = acc[(strategy or "(none)", tier or "")]
            a[0] += n
            a[1] += answered
            a[2] += escalations
            a[3] += int(prompt)
            a[4] += int(completion)
            a[5] += cost
            a[6] += escalation_cost
            if price is not None:
                a[7] += cost_compute(price=price, prompt_tokens=int(prompt), completion_tokens=int(completion), cached_tokens=int(cached))
            elif answered:
                a[8] = True  # a day without a premium price: no counterfactual
        if progress:
            progress(1)
    columns = ["strategy", "tier", "chosen_by", "requests", "answered", "escalations", "prompt_tokens", "completion_tokens",
               "cost_usd", "escalation_cost_usd", "premium_equivalent_usd", "savings_usd"]  # fmt: skip
    table = ReportTable(title=f"Cost by route, {month.label} ({scope.label}; UTC; from llm_requests)", columns=columns)
    total_cost, credited = ZERO, ZERO
    for (strategy, tier), (n, answered, escalations, prompt, completion, cost, esc, prem, unpriced) in sorted(
        acc.items(), key=lambda item: -item[1][5]
    ):
        chosen_by = "router" if strategy in ROUTED_STRATEGIES else "budget" if strategy == "downgrade" else "client"
        premium_cost = None if unpriced or premium is None else quantize_usd(prem)
        savings = None if premium_cost is None else premium_cost - cost
        if savings is not None and chosen_by == "router":
            credited += savings
        total_cost += cost
        table.rows.append(
            [strategy, tier, chosen_by, n, answered, escalations, prompt, completion, cost, esc, premium_cost, savings]
        )
    table.totals = ["TOTAL", "", "", *[sum(r[i] for r in table.rows) for i in range(3, 8)], total_cost,
                    sum((r[9] for r in table.rows), ZERO), None, None]  # fmt: skip
    table.notes.append(
        f"Routing savings (router-chosen strategies: {', '.join(ROUTED_STRATEGIES)}): "
        f"${quantize_usd(credited, places=2):,} = answered tokens × {premium or 'no premium model'} list price − cost_usd "
        "(escalations included in the cost)."
    )
    return table


CHARGEBACK_COLUMNS = [
    "month", "org", "org_name", "team", "team_name", "requests", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cost_usd", "saved_usd", "share_of_org_pct",
]  # fmt: skip


def chargeback(*, month: Month, org_slug: str | None = None, refresh: bool = False) -> ReportTable:
    """One row per team for the month: what each team is charged back (cost_usd at full precision).

    Reads the rollup; `refresh` recomputes the month's rollup from the ledger first (closing a month).
    """
    from apps.ledger.services import cost_rollup

    scope = _scope_for_org(org_slug)
    if refresh:
        last = min(month.end - dt.timedelta(days=1), clock.today())
        if last >= month.start:
            cost_rollup(since=month.start, until=last)
    queryset = scope.filter(CostDailySummary.objects.filter(date__gte=month.start, date__lt=month.end))
    rows = list(
        queryset.values("org_id", "org__slug", "org__name", "team_id", "team__slug", "team__name")
        .annotate(
            n=Sum("requests"),
            pt=Sum("prompt_tokens"),
            ct=Sum("completion_tokens"),
            cached=Sum("cached_tokens"),
            cost=Sum("cost_usd"),
            saved=Sum("saved_usd"),
        )  # fmt: skip
        .order_by("org__slug", "team__slug")
    )
    org_totals: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        org_totals[row["org_id"]] += row["cost"]
    table = ReportTable(title=f"Chargeback {month.label} ({scope.label})", columns=CHARGEBACK_COLUMNS)
    for row in rows:
        org_total = org_totals[row["org_id"]]
        share = quantize_usd(row["cost"] / org_total * 100, places=2) if org_total else Decimal("0.00")
        table.rows.append(
            [
                month.label, row["org__slug"] or "", row["org__name"] or "(no org)", row["team__slug"] or "",
                row["team__name"] or "(no team)", int(row["n"]), int(row["pt"]), int(row["ct"]), int(row["cached"]),
                row["cost"], row["saved"], share,
            ]
        )  # fmt: skip
    total = sum((r[9] for r in table.rows), ZERO)
    table.totals = ["TOTAL", "", "", "", "", *[sum(r[i] for r in table.rows) for i in range(5, 9)], total,
                    sum((r[10] for r in table.rows), ZERO), None]  # fmt: skip
    return table


# --- FOCUS export ------------------------------------------------------------------------------

FOCUS_DAY_SQL = """
SELECT r.org_id, r.team_id, r.model, r.provider, r.price_id,
       count(*),
       count(*) FILTER (WHERE r.cost_usd > 0),
       coalesce(sum(r.prompt_tokens - r.cached_tokens) FILTER (WHERE r.cost_usd > 0), 0),
       coalesce(sum(r.cached_tokens) FILTER (WHERE r.cost_usd > 0), 0),
       coalesce(sum(r.completion_tokens) FILTER (WHERE r.cost_usd > 0), 0),
       coalesce(sum(r.cost_usd), 0), coalesce(sum(r.escalation_cost_usd), 0), count(*) FILTER (WHERE r.escalated),
       coalesce(sum(r.saved_usd), 0), r.endpoint
FROM llm_requests r
WHERE r.received_at >= %(start)s AND r.received_at < %(end)s {scope}
GROUP BY 1, 2, 3, 4, 5, 15
ORDER BY 1, 2, 3, 5, 15
"""


@dataclass
class FocusResult:
    rows: int = 0
    billed_cost: Decimal = ZERO  # Σ BilledCost written
    ledger_cost: Decimal = ZERO  # Σ cost_usd of the month's requests in scope
    adjustments: int = 0
    adjustment_cost: Decimal = ZERO
    cache_savings: Decimal = ZERO

    @property
    def reconciled(self) -> bool:
        return self.billed_cost == self.ledger_cost


class FocusReconciliationError(RuntimeError):
    pass


def focus_export(*, month: Month, out: TextSink, org_slug: str | None = None, progress: Progress | None = None) -> FocusResult:
    """Write the month as FOCUS v1.2 CSV (see apps/reports/focus.py for the grain and the money rules).

    Raises FocusReconciliationError if the rows written do not add up to the ledger exactly.
    """
    scope = _scope_for_org(org_slug)
    orgs = (
        {o.id: o for o in Organization.objects.all()}
        if scope.org_id is None
        else {scope.org_id: Organization.objects.get(pk=scope.org_id)}
    )
    teams = {t.id: t for t in scope.filter(Team.objects.all(), team_field="id")}
    prices: dict[int, focus.PriceRow] = {}
    writer = csv.DictWriter(out, fieldnames=focus.FOCUS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    params: dict = {}
    scope_sql = ""
    if scope.org_id is not None:
        scope_sql = " AND r.org_id = %(org)s"
        params["org"] = scope.org_id
    sql = FOCUS_DAY_SQL.format(scope=scope_sql)
    result = FocusResult()
    for day in _month_days(month):
        params.update(start=day_start(day), end=day_start(day + dt.timedelta(days=1)))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            groups = cursor.fetchall()
        missing = {g[4] for g in groups if g[4] is not None and g[4] not in prices}
        if missing:
            for p in ModelPrice.objects.filter(id__in=missing):
                prices[p.id] = focus.PriceRow(
                    id=p.id, input_per_1m=p.input_per_1m, cached_input_per_1m=p.cached_input_per_1m, output_per_1m=p.output_per_1m
                )
        for (
            org_id,
            team_id,
            model,
            provider,
            price_id,
            n,
            billed,
            inp,
            cached,
            out_tokens,
            cost,
            esc,
            escalations,
            saved,
            endpoint,
        ) in groups:
            result.ledger_cost += cost
            result.cache_savings += saved
            if not cost and not saved and not escalations:
                continue  # rejects and failures: nothing billed, nothing saved
            org = orgs.get(org_id)
            team = teams.get(team_id)
            group = focus.UsageGroup(
                day=day,
                org_slug=org.slug if org else "",
                org_name=org.name if org else "(no org)",
                team_slug=team.slug if team else "",
                team_name=team.name if team else "",
                model=model,
                provider=provider,
                price=prices.get(price_id) if price_id is not None else None,
                requests=n,
                billed_requests=billed,
                input_tokens=int(inp),
                cached_tokens=int(cached),
                output_tokens=int(out_tokens),
                cost=cost,
                escalation_cost=esc,
                escalations=escalations,
                saved=saved,
                endpoint=endpoint,
            )
            for row in focus.usage_rows(group, billing_start=month.start, billing_end=month.end):
                writer.writerow(row)
                result.rows += 1
                billed_cost = Decimal(row["BilledCost"])
                result.billed_cost += billed_cost
                if row["ChargeCategory"] == "Adjustment":
                    result.adjustments += 1
                    result.adjustment_cost += billed_cost
        if progress:
            progress(1)
    if not result.reconciled:
        raise FocusReconciliationError(f"FOCUS rows add up to {result.billed_cost}, the ledger to {result.ledger_cost}")
    return result


def month_ledger_total(*, month: Month, org_slug: str | None = None) -> Decimal:
    """Σ cost_usd of the month's requests straight from llm_requests (the reconciliation reference)."""
    from apps.ledger.models import LLMRequest

    queryset = LLMRequest.objects.filter(received_at__gte=month.start_at, received_at__lt=month.end_at)
    if org_slug:
        queryset = queryset.filter(Q(org__slug=org_slug))
    return queryset.aggregate(total=Sum("cost_usd"))["total"] or ZERO
