from __future__ import annotations

from decimal import Decimal

from django import template

from apps.reports import charts
from apps.reports.dashboard import dashboard_context
from apps.reports.periods import current_month, month_parse
from apps.tenancy.access import admin_home_scope
from finops.errors import BadRequest

register = template.Library()


@register.inclusion_tag("reports/dashboard.html", takes_context=True)
def cost_dashboard(context) -> dict:
    """The admin home's cost dashboard, scoped to what the signed-in staff member may see."""
    request = context["request"]
    scope = admin_home_scope(request.user)
    if scope is None:
        return {"no_scope": True}
    try:
        month = month_parse(request.GET.get("month"))
    except BadRequest:
        month = current_month()
    return {**dashboard_context(scope=scope, month=month, user=request.user), "base_url": request.path}


@register.filter
def usd(value, places: int = 2) -> str:
    return charts.usd(value, places=int(places))


@register.filter
def pct(value, places: int = 0) -> str:
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(places)}f}%"


@register.filter
def signed_pct(value) -> str:
    if value is None:
        return "—"
    return f"{float(value):+.0f}%"


@register.filter
def ratio_pct(value) -> str:
    """0.42 → 42%"""
    if value is None:
        return "—"
    return f"{float(value) * 100:.0f}%"


@register.filter
def num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    return f"{int(value):,}"
