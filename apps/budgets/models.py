"""Budget governance: caps per org, team and user, the hot-path counters, reservations, history and alerts.

The request path never touches these through the ORM: it calls the SQL functions created in
migration 0002 (`budget_reserve`, `budget_settle`, ...) over asyncpg. The ORM models here serve the
admin, the API, the beat jobs and the tests.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from apps.ledger.money import CAP_DECIMAL_PLACES, CAP_MAX_DIGITS, COST_DECIMAL_PLACES, COST_MAX_DIGITS

# Caps above this are typos (an extra zero or three), not budgets; FINOPS["BUDGET_CAP_MAX_USD"] may lower it.
CAP_ABSURD_USD = Decimal("10000000.00")
DEFAULT_SOFT_PCT = (50, 80, 100)


def default_soft_pct() -> list[int]:
    return list(DEFAULT_SOFT_PCT)


def _cost_field(**kwargs) -> models.DecimalField:
    kwargs.setdefault("default", Decimal(0))
    return models.DecimalField(max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, **kwargs)


def _cap_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=CAP_MAX_DIGITS, decimal_places=CAP_DECIMAL_PLACES, **kwargs)


class Budget(models.Model):
    class Scope(models.TextChoices):
        ORG = "org", "Organization"
        TEAM = "team", "Team"
        USER = "user", "User"

    class Period(models.TextChoices):
        DAILY = "daily", "Daily (UTC)"
        MONTHLY = "monthly", "Monthly (UTC)"

    class Action(models.TextChoices):
        BLOCK = "block", "Block (429)"
        DOWNGRADE = "downgrade", "Downgrade to the cheapest tier"
        ALERT_ONLY = "alert_only", "Alert only"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    # Always set, also for team and user budgets: it is what keeps the API and the admin org-scoped.
    org = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="budgets")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    member = models.ForeignKey(
        "tenancy.Member", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets", verbose_name="user"
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTHLY)
    cap_usd = _cap_field(
        verbose_name="cap (USD)",
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(CAP_ABSURD_USD)],
    )
    soft_pct = ArrayField(
        models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(100)]),
        default=default_soft_pct,
        size=8,
        verbose_name="alert thresholds (% of cap)",
        help_text="Comma-separated percentages of the cap at which an alert fires, once per period. The cap itself always alerts.",
    )
    action = models.CharField(max_length=12, choices=Action.choices, default=Action.BLOCK)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "budgets"
        ordering = ["org__name", "scope", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    (Q(scope="org") & Q(team__isnull=True) & Q(member__isnull=True))
                    | (Q(scope="team") & Q(team__isnull=False) & Q(member__isnull=True))
                    | (Q(scope="user") & Q(member__isnull=False))
                ),
                name="budget_scope_shape",
            ),
            models.CheckConstraint(condition=Q(cap_usd__gte=0), name="budget_cap_non_negative"),
            # One active budget per target and period; the hot path would otherwise have to pick one.
            models.UniqueConstraint(
                fields=["scope", "org", "team", "member", "period"],
                condition=Q(active=True),
                nulls_distinct=False,
                name="budget_one_active_per_target_period",
            ),
        ]
        # The hot path looks budgets up by one of the three keys; partial indexes keep each lookup tiny.
        indexes = [
            models.Index(fields=["org"], condition=Q(active=True, scope="org"), name="budget_active_org"),
            models.Index(fields=["team"], condition=Q(active=True, scope="team"), name="budget_active_team"),
            models.Index(fields=["member"], condition=Q(active=True, scope="user"), name="budget_active_user"),
        ]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} {self.target_label} · {self.period} · ${self.cap_usd}"

    @property
    def target_label(self) -> str:
        if self.scope == self.Scope.USER and self.member is not None:
            return self.member.username
        if self.scope == self.Scope.TEAM and self.team is not None:
            return self.team.name
        return self.org.name if self.org_id else "?"


class BudgetCounter(models.Model):
    """The hot-path row: spend and open reservations of one budget in one period.

    A new period is a new row (created by the SQL function on first use), so roll-over needs no job.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="counters")
    period_start = models.DateTimeField()
    spent_usd = _cost_field()
    reserved_usd = _cost_field()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "budget_counters"
        ordering = ["-period_start"]
        constraints = [models.UniqueConstraint(fields=["budget", "period_start"], name="budget_counter_one_per_period")]

    def __str__(self) -> str:
        return f"budget {self.budget_id} from {self.period_start:%Y-%m-%d}"


class Reservation(models.Model):
    class State(models.TextChoices):
        RESERVED = "reserved"
        SETTLED = "settled"
        EXPIRED = "expired"  # never settled in time; the sweep released it

    request_id = models.UUIDField(db_index=True)
    # Plain ids, not foreign keys: the hot-path insert should not pay three FK checks.
    org_id = models.BigIntegerField(null=True)
    team_id = models.BigIntegerField(null=True)
    member_id = models.BigIntegerField(null=True)
    counter_ids = ArrayField(models.BigIntegerField())
    amount_usd = _cost_field()
    actual_usd = _cost_field(null=True, blank=True, default=None)
    state = models.CharField(max_length=8, choices=State.choices, default=State.RESERVED)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "budget_reservations"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(state="reserved"), name="budget_reservation_open"),
            models.Index(fields=["settled_at"], condition=Q(state="settled"), name="budget_reservation_settled"),
        ]

    def __str__(self) -> str:
        return f"reservation {self.id} ({self.state})"


class BudgetChange(models.Model):
    """History of a budget: who changed which field when, from what to what. Written only by `budget_update`."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The name at the time: the user row may be renamed or deleted later.
    changed_by_label = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)
    field = models.CharField(max_length=32)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)

    class Meta:
        db_table = "budget_changes"
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value} → {self.new_value}"


class BudgetAlert(models.Model):
    """A threshold crossed. The unique key is what makes each alert fire once per budget, period and threshold."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField()  # % of the cap; 100 = the cap
    spent_usd = _cost_field()
    cap_usd = _cap_field()
    created_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_result = models.CharField(max_length=255, blank=True)

    class Meta:
        db_table = "budget_alerts"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start", "threshold"], name="budget_alert_once_per_period")
        ]
        indexes = [models.Index(fields=["created_at"], condition=Q(dispatched_at__isnull=True), name="budget_alert_pending")]

    def __str__(self) -> str:
        return f"{self.budget} reached {self.threshold}%"
