"""Budget reads: current-period usage, forecast, cap warnings, the metrics gauge."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Case, DecimalField, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from apps.budgets.models import Budget, BudgetCounter
from apps.ledger.money import CAP_DECIMAL_PLACES, COST_DECIMAL_PLACES, COST_MAX_DIGITS, quantize_usd
from finops import clock

_MONEY = DecimalField(max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES)


def period_start(period: str, at: dt.datetime) -> dt.datetime:
    """Start of the UTC day or month containing `at` (the SQL function `budget_period_start` agrees)."""
    at = at.astimezone(dt.UTC)
    if period == Budget.Period.DAILY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_end(period: str, start: dt.datetime) -> dt.datetime:
    if period == Budget.Period.DAILY:
        return start + dt.timedelta(days=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def budget_usage_annotate(queryset: QuerySet[Budget], *, now: dt.datetime | None = None) -> QuerySet[Budget]:
    """Annotate `spent_now` and `reserved_now`: the counter of each budget's current period (0 before first use)."""
    now = now or clock.now()
    by_period = {
        period: BudgetCounter.objects.filter(budget=OuterRef("pk"), period_start=period_start(period, now))
        for period in Budget.Period.values
    }

    def current(column: str):
        return Coalesce(
            Case(
                *[When(period=period, then=Subquery(counters.values(column)[:1])) for period, counters in by_period.items()],
                output_field=_MONEY,
            ),
            Value(Decimal(0)),
            output_field=_MONEY,
        )

    return queryset.annotate(spent_now=current("spent_usd"), reserved_now=current("reserved_usd"))


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    period_start: dt.datetime
    period_end: dt.datetime
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal
    utilisation: float | None  # spent / cap
    forecast_usd: Decimal  # end-of-period spend at the burn rate so far


def budget_status(budget: Budget, *, now: dt.datetime) -> BudgetStatus:
    start = period_start(budget.period, now)
    end = period_end(budget.period, start)
    spent = getattr(budget, "spent_now", Decimal(0)) or Decimal(0)
    reserved = getattr(budget, "reserved_now", Decimal(0)) or Decimal(0)
    elapsed = Decimal((now - start).total_seconds())
    length = Decimal((end - start).total_seconds())
    # Linear burn rate; in the first minute of a period there is no rate to speak of yet.
    forecast = spent * length / elapsed if elapsed >= 60 else spent
    cap = budget.cap_usd
    return BudgetStatus(
        budget=budget,
        period_start=start,
        period_end=end,
        spent_usd=quantize_usd(spent),
        reserved_usd=quantize_usd(reserved),
        remaining_usd=quantize_usd(max(cap - spent - reserved, Decimal(0))),
        utilisation=round(float(spent / cap), 4) if cap > 0 else None,
        forecast_usd=quantize_usd(forecast, places=CAP_DECIMAL_PLACES),
    )


def budget_status_list(
    *, org_id: int | None, include_all_orgs: bool = False, now: dt.datetime | None = None
) -> list[BudgetStatus]:
    """Active budgets of one org (or of every org, for superusers) with their current-period usage. One query."""
    if org_id is None and not include_all_orgs:
        return []
    now = now or clock.now()
    queryset = Budget.objects.filter(active=True).select_related("org", "team", "member").order_by("org__name", "scope", "id")
    if org_id is not None:
        queryset = queryset.filter(org_id=org_id)
    return [budget_status(budget, now=now) for budget in budget_usage_annotate(queryset, now=now)]


def budget_cap_warnings(*, budget: Budget) -> list[str]:
    """Caps that exceed the cap of the level above for the same period: allowed, but worth a second look."""
    parents: list[tuple[str, QuerySet[Budget]]] = []
    same = Budget.objects.filter(active=True, period=budget.period)
    if budget.scope == Budget.Scope.TEAM:
        parents.append(("its organization's", same.filter(scope=Budget.Scope.ORG, org_id=budget.org_id)))
    elif budget.scope == Budget.Scope.USER:
        parents.append(("its team's", same.filter(scope=Budget.Scope.TEAM, team=budget.team)))
        parents.append(("its organization's", same.filter(scope=Budget.Scope.ORG, org_id=budget.org_id)))
    warnings = []
    for label, queryset in parents:
        parent = queryset.first()
        if parent is not None and budget.cap_usd > parent.cap_usd:
            warnings.append(
                f"The {budget.period} cap of ${budget.cap_usd} for {budget.get_scope_display().lower()} '{budget.target_label}' "
                f"exceeds {label} {budget.period} cap of ${parent.cap_usd}; the lower cap applies first."
            )
    return warnings


def budget_utilisation_by_org_scope(*, now: dt.datetime | None = None) -> list[tuple[int, str, str, float]]:
    """(org id, org slug, scope, highest spent/cap) over active budgets with a positive cap, current period."""
    now = now or clock.now()
    best: dict[tuple[int, str, str], float] = {}
    annotated: QuerySet[Any] = budget_usage_annotate(Budget.objects.filter(active=True, cap_usd__gt=0), now=now)
    rows = annotated.values_list(
        "org_id", "org__slug", "scope", "cap_usd", "spent_now"
    )
    for org_id, slug, scope, cap, spent in rows:
        ratio = float((spent or 0) / cap)
        best[(org_id, slug, scope)] = max(best.get((org_id, slug, scope), 0.0), ratio)
    return [(org_id, slug, scope, ratio) for (org_id, slug, scope), ratio in sorted(best.items())]
