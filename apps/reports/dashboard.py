"""The cost dashboard's context: selectors' figures plus their SVG charts, for one scope and month.

Used by the admin home (templates/admin/index.html → `{% cost_dashboard %}`) and by the org and
team pages (admin/reports/org/<id>/, admin/reports/team/<id>/), so every scope shows the same view.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse
from django.utils.safestring import mark_safe

from apps.ledger.money import ZERO
from apps.reports import charts
from apps.reports.aggregates import dashboard_aggregates
from apps.reports.periods import Month
from apps.reports.selectors import BreakdownRow, budget_views, month_forecast, open_anomalies
from apps.tenancy.access import Scope, is_finance
from finops import clock


@dataclass
class Table:
    title: str
    rows: list[BreakdownRow]
    link: str | None = None  # "org" / "team": rows link to that scoped dashboard
    more: int = 0  # rows not shown


def _link(kind: str | None, key) -> str | None:
    if kind is None or key is None:
        return None
    return reverse(f"reports_admin:{kind}", args=[key])


def _table(title: str, rows: list[BreakdownRow], *, link: str | None, limit: int) -> Table:
    shown = rows[:limit]
    for row in shown:
        row.url = _link(link, row.key)  # type: ignore[attr-defined]
        row.bar = mark_safe(  # type: ignore[attr-defined]  # noqa: S308 - numbers only
            f'<span class="fd-share"><span style="width:{min(row.share * 100, 100):.1f}%"></span></span>'
        )
    return Table(title=title, rows=shown, link=link, more=max(len(rows) - limit, 0))


def dashboard_context(*, scope: Scope, month: Month, user) -> dict:
    today = clock.today()
    aggregates = dashboard_aggregates(scope=scope, month=month, today=today)  # cached until the next rollup
    overview, routing = aggregates.overview, aggregates.routing
    in_progress = month.start <= today < month.end
    budgets = budget_views(scope=scope, month=month) if in_progress else None
    anomalies = open_anomalies(scope=scope)

    tables: list[Table] = []
    if scope.level == "all":
        tables.append(_table("Spend by organization", overview.orgs, link="org", limit=20))
        tables.append(_table("Top teams", overview.teams, link="team", limit=10))
    elif scope.level == "org":
        tables.append(_table("Spend by team", overview.teams, link="team", limit=25))
        tables.append(_table("Top users", overview.users, link=None, limit=10))
    else:
        tables.append(_table("Spend by user", overview.users, link=None, limit=25))
    tables.append(_table("Spend by API (endpoint)", overview.endpoints, link=None, limit=10))
    models = _table("Top models", overview.models, link=None, limit=10)

    days = [day for day, _ in overview.daily]
    last = overview.through
    daily_chart = charts.bar_chart(
        [(f"{d.day}", t.cost) for d, t in overview.daily if d <= last] or [(str(month.start.day), ZERO)],
        title=f"Spend per day, {month.label}",
        width=470,
    )
    cumulative_now, running = [], ZERO
    for day, totals in overview.daily:
        if day > last:
            break
        running += totals.cost
        cumulative_now.append(running)
    cumulative_prev, running = [], ZERO
    for _, totals in overview.previous_daily:
        running += totals.cost
        cumulative_prev.append(running)
    line = charts.LineChart(
        title=f"Cumulative spend: {month.label} vs {month.previous.label}",
        x_labels=[str(d.day) for d in days]
        if len(days) >= len(cumulative_prev)
        else [str(i + 1) for i in range(len(cumulative_prev))],
        series=[
            charts.Series(name=month.previous.label, values=cumulative_prev, color="#b0b8bf"),
            charts.Series(name=month.label, values=cumulative_now, color=charts.PALETTE[0]),
        ],
    )
    if in_progress and cumulative_now:
        line.series.append(
            charts.Series(
                name="forecast",
                values=[cumulative_now[-1], overview.forecast],
                color=charts.PALETTE[0],
                dashed=True,
                offset=len(cumulative_now) - 1,
            )
        )
        # The forecast line reaches month end: stretch it over the remaining days.
        remaining = month.length_days - len(cumulative_now)
        if remaining > 0:
            step = (overview.forecast - cumulative_now[-1]) / remaining
            line.series[-1].values = [cumulative_now[-1] + step * i for i in range(remaining + 1)]
    models_chart = charts.hbar_chart([(r.label, r.current.cost) for r in models.rows], title="Top models, month to date")

    budget_charts = []
    for view in budgets or []:
        if view.cumulative is None:
            continue
        cap = view.budget.cap_usd
        forecast_points = []
        if view.cumulative:
            # From the same ledger figures as the line it continues (the table shows the live counters).
            end_value = month_forecast(spent=view.cumulative[-1], month=month)
            remaining = month.length_days - len(view.cumulative)
            step = (end_value - view.cumulative[-1]) / remaining if remaining > 0 else ZERO
            forecast_points = [view.cumulative[-1] + step * i for i in range(remaining + 1)]
        chart = charts.LineChart(
            title=f"Burn-down: {view.budget.get_scope_display()} {view.budget.target_label}",
            x_labels=[str(d.day) for d in days],
            series=[
                charts.Series(name="spent", values=view.cumulative, color=charts.PALETTE[0]),
                charts.Series(
                    name="forecast",
                    values=forecast_points,
                    dashed=True,
                    color=charts.PALETTE[1],
                    offset=max(len(view.cumulative) - 1, 0),
                ),
            ],  # fmt: skip
            hlines=[charts.HLine(value=cap, label=f"cap {charts.usd(cap, places=0)}")],
            width=460,
            height=200,
        )
        budget_charts.append({"view": view, "svg": chart.render(), "caption": chart.title})

    change = None
    if overview.previous_same_point.cost:
        change = float((overview.current.cost - overview.previous_same_point.cost) / overview.previous_same_point.cost * 100)
    org_param = f"&org={scope.org_slug}" if scope.org_slug else ""
    return {
        "scope": scope,
        "month": month,
        "in_progress": in_progress,
        "overview": overview,
        "change_pct": change,
        "forecast": overview.forecast,
        "routing": routing,
        "routing_by_strategy": routing.by_strategy(),
        "budgets": budgets,
        "budget_charts": budget_charts,
        "anomalies": anomalies,
        "tables": tables,
        "models": models,
        "daily_chart": daily_chart,
        "cumulative_chart": line.render(),
        "models_chart": models_chart,
        "prev_month": month.previous,
        "next_month": month.next if month.next.start <= today else None,
        "chargeback_url": f"{reverse('reports_admin:chargeback')}?month={month.label}{org_param}",
        "focus_url": f"{reverse('reports_admin:focus')}?month={month.label}" if is_finance(user) else None,
        "anomaly_list_url": _anomaly_list_url(scope),
    }


def _anomaly_list_url(scope: Scope) -> str | None:
    try:
        url = reverse("admin:anomalies_anomaly_changelist")
    except Exception:  # noqa: BLE001 - the anomalies app is optional
        return None
    query = "?status__exact=open"
    if scope.org_id:
        query += f"&org__id__exact={scope.org_id}"
    return url + query
