"""Budget writes of the admin and beat (sync, ORM): `budget_create` / `budget_update` (which keep the history),
`reservation_sweep`, `budget_reconcile` and `budget_alert_dispatch`.

The request path's writes (reserve and settle, async, batched per event loop) are in `apps.budgets.hotpath`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from apps.alerts.services import alert_dispatch
from apps.budgets.hotpath import (  # noqa: F401 - the hot path's names that callers outside budgets import from here
    BudgetBroken,
    BudgetUnavailable,
    background_drain,
    budget_connection_warm,
    reservation_create,
    reservation_settle,
)
from apps.budgets.models import Budget, BudgetAlert, BudgetChange
from apps.ledger.money import CAP_DECIMAL_PLACES, quantize_usd
from finops import clock
from finops.conf import conf

logger = logging.getLogger(__name__)

# --- budgets and their history ----------------------------------------------------------------------

EDITABLE_FIELDS = ("cap_usd", "soft_pct", "action", "period", "active")


def budget_cap_validate(cap_usd: Decimal | None) -> Decimal:
    if cap_usd is None:
        raise ValidationError("A cap is required.")
    cap = quantize_usd(Decimal(cap_usd), places=CAP_DECIMAL_PLACES)
    if cap < 0:
        raise ValidationError("A cap cannot be negative.", code="negative")
    limit = conf().budget_cap_max_usd
    if cap > limit:
        raise ValidationError(f"A cap above ${limit:,.2f} is almost certainly a typo.", code="absurd")
    return cap


def budget_soft_pct_normalize(values: Iterable[int]) -> list[int]:
    cleaned = sorted({int(v) for v in values})
    if any(v < 1 or v > 100 for v in cleaned):
        raise ValidationError("Alert thresholds are percentages of the cap, from 1 to 100.")
    return cleaned


def budget_validate(*, budget: Budget) -> None:
    """Scope shape and tenancy consistency; fills org (and team) from the narrower target."""
    if budget.scope == Budget.Scope.USER:
        member = budget.member if budget.member_id is not None else None
        if member is None:
            raise ValidationError({"member": "A user budget needs a user."})
        budget.org_id, budget.team_id = member.org_id, member.team_id
    elif budget.scope == Budget.Scope.TEAM:
        team = budget.team if budget.team_id is not None else None
        if team is None:
            raise ValidationError({"team": "A team budget needs a team."})
        budget.member = None
        budget.org_id = team.org_id
    else:
        budget.team = None
        budget.member = None
        if budget.org_id is None:
            raise ValidationError({"org": "An org budget needs an organization."})
    budget.cap_usd = budget_cap_validate(budget.cap_usd)
    budget.soft_pct = budget_soft_pct_normalize(budget.soft_pct)
    if budget.active:
        clash = Budget.objects.filter(
            active=True,
            scope=budget.scope,
            org_id=budget.org_id,
            team=budget.team,
            member=budget.member,
            period=budget.period,
        ).exclude(pk=budget.pk)
        if clash.exists():
            raise ValidationError("There is already an active budget for this target and period; edit that one.")


def _display(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _actor(user) -> tuple[Any, str]:
    if user is None or not getattr(user, "pk", None):
        return None, str(user or "system")
    return user, user.get_username()


@transaction.atomic
def budget_create(*, budget: Budget, user=None) -> Budget:
    """Save a new budget and record its initial values in the history."""
    budget_validate(budget=budget)
    budget.save()
    changed_by, label = _actor(user)
    BudgetChange.objects.bulk_create(
        [
            BudgetChange(
                budget=budget,
                changed_by=changed_by,
                changed_by_label=label,
                field=field,
                old_value="",
                new_value=_display(getattr(budget, field)),
            )
            for field in EDITABLE_FIELDS
        ]
    )
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, changes: dict[str, Any], user=None) -> Budget:
    """Apply `changes` (field → new value) to a budget and keep one history row per changed field.

    The old values are read from the locked row, not from `budget`, which a form may already have modified.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    current = Budget.objects.select_for_update().get(pk=budget.pk)
    changed_by, label = _actor(user)
    records: list[BudgetChange] = []
    for field, new in changes.items():
        if field == "cap_usd":
            new = budget_cap_validate(new)
        elif field == "soft_pct":
            new = budget_soft_pct_normalize(new)
        old = getattr(current, field)
        if old == new:
            continue
        setattr(current, field, new)
        records.append(
            BudgetChange(
                budget=current,
                changed_by=changed_by,
                changed_by_label=label,
                field=field,
                old_value=_display(old),
                new_value=_display(new),
            )
        )
    if not records:
        return current
    budget_validate(budget=current)
    current.save()
    BudgetChange.objects.bulk_create(records)
    for field in EDITABLE_FIELDS:
        setattr(budget, field, getattr(current, field))
    return current


# --- beat: sweep, reconcile, alerts -----------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    expired: int
    purged: int
    alerts_dispatched: int

    def __str__(self) -> str:
        return f"expired={self.expired} purged={self.purged} alerts={self.alerts_dispatched}"


def reservation_sweep(*, batch: int = 5000) -> SweepResult:
    """Expire reservations past their TTL and release what they held; purge old settled ones; retry alerts."""
    expired = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT budget_sweep(%s)", [batch])
            n = cursor.fetchone()[0]
            expired += n
            if n < batch:
                break
        cursor.execute(
            """
            DELETE FROM budget_reservations WHERE id IN (
                SELECT id FROM budget_reservations
                WHERE state <> 'reserved' AND settled_at < now() - make_interval(days => %s)
                LIMIT 50000)
            """,
            [conf().budget_reservation_retention_days],
        )
        purged = cursor.rowcount
    dispatched = budget_alerts_dispatch_pending()
    return SweepResult(expired=expired, purged=purged, alerts_dispatched=dispatched)


@dataclass(frozen=True)
class ReconcileResult:
    budgets: int
    corrected: int
    spent_delta_usd: Decimal
    alerts_dispatched: int

    def __str__(self) -> str:
        return f"budgets={self.budgets} corrected={self.corrected} delta={self.spent_delta_usd} alerts={self.alerts_dispatched}"


def budget_reconcile(*, budget_ids: Iterable[int] | None = None) -> ReconcileResult:
    """Bring the current-period counters in line with the ledger (fail-open spend, drift, lost settles).

    One short transaction per budget, so the hot path never waits behind the whole job.
    """
    ids = (
        list(budget_ids)
        if budget_ids is not None
        else list(Budget.objects.filter(active=True).order_by("id").values_list("id", flat=True))
    )
    window = float(conf().budget_reconcile_window_s)
    corrected = 0
    delta = Decimal(0)
    alert_ids: list[int] = []
    with connection.cursor() as cursor:
        for budget_id in ids:
            cursor.execute("SELECT * FROM budget_reconcile(%s, %s)", [budget_id, window])
            row = cursor.fetchone()
            if row is None:
                continue
            _, spent_before, spent_after, reserved_before, reserved_after, raised = row
            if spent_before != spent_after or reserved_before != reserved_after:
                corrected += 1
                delta += spent_after - spent_before
            alert_ids.extend(raised or ())
    dispatched = sum(1 for alert_id in alert_ids if budget_alert_dispatch(alert_id=alert_id))
    return ReconcileResult(budgets=len(ids), corrected=corrected, spent_delta_usd=delta, alerts_dispatched=dispatched)


SEVERITY_BY_THRESHOLD = ((100, "critical"), (80, "warning"), (0, "info"))
ALERT_SCOPE_TYPE: dict[str, str] = {Budget.Scope.ORG: "org", Budget.Scope.TEAM: "team", Budget.Scope.USER: "member"}


def budget_alert_severity(threshold: int) -> str:
    return next(severity for floor, severity in SEVERITY_BY_THRESHOLD if threshold >= floor)


def budget_alert_dispatch(*, alert_id: int) -> bool:
    """Send one threshold alert through the alert routes (apps.alerts), exactly once.

    The row is claimed with a lock and marked in the same transaction as the dispatch: if routing
    fails, both roll back and the sweep retries; if another worker holds it, this one skips it.
    """
    with transaction.atomic():
        alert = (
            BudgetAlert.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("budget", "budget__org", "budget__team", "budget__member")
            .filter(pk=alert_id, dispatched_at__isnull=True)
            .first()
        )
        if alert is None:
            return False
        budget = alert.budget
        reached = "its cap" if alert.threshold >= 100 else f"{alert.threshold}% of its cap"
        title = f"Budget {budget.get_scope_display().lower()} '{budget.target_label}' reached {reached}"
        text = (
            f"{budget.get_scope_display()} '{budget.target_label}' ({budget.org.name}) has spent ${quantize_usd(alert.spent_usd, places=2)} "
            f"of its {budget.period} cap of ${alert.cap_usd} in the period starting {alert.period_start:%Y-%m-%d} UTC. "
            f"Action at the cap: {budget.get_action_display()}."
        )
        routes = alert_dispatch(
            severity=budget_alert_severity(alert.threshold),
            scope_type=ALERT_SCOPE_TYPE[budget.scope],
            org_id=budget.org_id,
            title=title,
            text=text,
            payload={
                "kind": "budget_threshold",
                "budget_id": budget.id,
                "scope": budget.scope,
                "target": budget.target_label,
                "period": budget.period,
                "period_start": alert.period_start.isoformat(),
                "threshold_pct": alert.threshold,
                "spent_usd": str(alert.spent_usd),
                "cap_usd": str(alert.cap_usd),
                "action": budget.action,
            },
        )
        alert.dispatched_at = clock.now()
        alert.dispatch_result = f"{routes} route(s)"
        alert.save(update_fields=["dispatched_at", "dispatch_result"])
    return True


def budget_alerts_dispatch_pending(*, limit: int = 500) -> int:
    pending = BudgetAlert.objects.filter(dispatched_at__isnull=True).order_by("created_at").values_list("id", flat=True)[:limit]
    dispatched = 0
    for alert_id in list(pending):
        try:
            dispatched += budget_alert_dispatch(alert_id=alert_id)
        except Exception:
            logger.exception("budget alert %s not dispatched; retrying next sweep", alert_id)
    return dispatched


def finance_group_ensure():
    """The `finance` group with its budget permissions (migration 0003 creates it; tests flush tables)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="finance")
    codenames = [
        "add_budget",
        "change_budget",
        "view_budget",
        "view_budgetchange",
        "view_budgetalert",
        "view_budgetcounter",
        "view_reservation",
    ]
    group.permissions.add(*Permission.objects.filter(content_type__app_label="budgets", codename__in=codenames))
    return group
