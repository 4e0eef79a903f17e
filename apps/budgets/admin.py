"""Finance's UI for budgets.

The `finance` group (and superusers) create and edit caps; every other staff member can look but not
touch. Every save goes through `budget_create` / `budget_update`, which keep the history shown on
the budget page.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html

from apps.budgets.models import Budget, BudgetAlert, BudgetChange, BudgetCounter, Reservation
from apps.budgets.selectors import budget_cap_warnings, budget_status, budget_usage_annotate
from apps.budgets.services import (
    EDITABLE_FIELDS,
    budget_cap_validate,
    budget_create,
    budget_reconcile,
    budget_soft_pct_normalize,
    budget_update,
    budget_validate,
)
from apps.ledger.money import quantize_usd
from apps.tenancy.access import OrgScopedAdminMixin
from finops import clock


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def utilisation_bar(ratio: float | None) -> str:
    """A plain HTML/CSS bar (the admin must work without any CDN)."""
    if ratio is None:
        return "—"
    pct = ratio * 100
    color = "#2e7d32" if pct < 80 else "#ef6c00" if pct < 100 else "#c62828"
    return format_html(
        '<div class="budget-bar" title="{}%" style="width:120px;height:10px;background:#e0e0e0;border-radius:5px;'
        'display:inline-block;vertical-align:middle;overflow:hidden">'
        '<div style="width:{}%;height:100%;background:{}"></div></div> <span>{}%</span>',
        f"{pct:.1f}",
        f"{min(pct, 100):.1f}",
        color,
        f"{pct:.0f}",
    )


class StaffReadOnlyMixin:
    """Every staff member may look; adding and changing follow the model permissions (the finance group)."""

    def has_module_permission(self, request):
        return _is_staff(request)

    def has_view_permission(self, request, obj=None):
        return _is_staff(request)


class ReadOnlyMixin(StaffReadOnlyMixin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BudgetAdminForm(forms.ModelForm):
    soft_pct = forms.CharField(
        label="Alert thresholds (% of cap)",
        initial="50, 80, 100",
        help_text="Comma-separated percentages at which an alert fires once per period. The cap itself always alerts.",
    )

    class Meta:
        model = Budget
        fields = ["scope", "org", "team", "member", "period", "cap_usd", "soft_pct", "action", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and "soft_pct" in self.fields:
            self.initial["soft_pct"] = ", ".join(str(v) for v in self.instance.soft_pct)
        if "org" in self.fields:
            self.fields["org"].required = False
            self.fields["org"].help_text = "Filled from the team or user when left empty."

    def clean_cap_usd(self) -> Decimal:
        return budget_cap_validate(self.cleaned_data.get("cap_usd"))

    def clean_soft_pct(self) -> list[int]:
        raw = self.cleaned_data.get("soft_pct") or ""
        try:
            values = [int(part) for part in str(raw).replace(";", ",").split(",") if part.strip()]
        except ValueError as exc:
            raise ValidationError("Use whole percentages separated by commas, e.g. 50, 80, 100.") from exc
        return budget_soft_pct_normalize(values)

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk:
            return cleaned  # the target is fixed once created (see get_readonly_fields)
        budget = Budget(
            scope=cleaned.get("scope"),
            org=cleaned.get("org"),
            team=cleaned.get("team"),
            member=cleaned.get("member"),
            period=cleaned.get("period") or Budget.Period.MONTHLY,
            cap_usd=cleaned.get("cap_usd") or Decimal(0),
            soft_pct=cleaned.get("soft_pct") or [],
            active=cleaned.get("active", True),
        )
        if budget.scope == Budget.Scope.USER and budget.member is not None:
            budget.team = budget.member.team
            budget.org = budget.member.org
        elif budget.scope == Budget.Scope.TEAM and budget.team is not None:
            budget.org = budget.team.org
        if cleaned.get("org") and budget.org_id and cleaned["org"].pk != budget.org_id:
            raise ValidationError({"org": "The team or user belongs to another organization."})
        budget_validate(budget=budget)
        cleaned["org"], cleaned["team"], cleaned["member"] = budget.org, budget.team, budget.member
        return cleaned


class BudgetChangeInline(ReadOnlyMixin, admin.TabularInline):
    model = BudgetChange
    fields = ["changed_at", "who", "field", "old_value", "new_value"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs type `fields` wider than a list of names
    extra = 0
    verbose_name = "change"
    verbose_name_plural = "History (who changed what, when)"
    ordering = ["-changed_at", "-id"]

    @admin.display(description="changed by")
    def who(self, obj: BudgetChange) -> str:
        return obj.changed_by_label or "—"


class BudgetAlertInline(ReadOnlyMixin, admin.TabularInline):
    model = BudgetAlert
    fields = ["period_start", "threshold", "spent_usd", "cap_usd", "created_at", "dispatched_at", "dispatch_result"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs type `fields` wider than a list of names
    extra = 0
    verbose_name_plural = "Alerts (once per period and threshold)"
    ordering = ["-created_at"]


@admin.register(Budget)
class BudgetAdmin(OrgScopedAdminMixin, StaffReadOnlyMixin, admin.ModelAdmin):
    form = BudgetAdminForm
    list_display = ["target", "scope", "org", "period", "cap", "usage", "spent", "reserved", "forecast", "action", "active"]
    list_filter = ["scope", "period", "action", "active", "org"]
    list_select_related = ["org", "team", "member"]
    search_fields = ["org__name", "team__name", "member__username"]
    inlines = [BudgetChangeInline, BudgetAlertInline]
    actions = ["reconcile_selected"]
    fieldsets = [
        ("Who", {"fields": ["scope", "org", "team", "member"]}),
        ("Cap", {"fields": ["period", "cap_usd", "soft_pct", "action", "active"]}),
        ("This period", {"fields": ["current_usage"]}),
    ]

    def get_queryset(self, request):
        return budget_usage_annotate(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None):
        readonly = ["current_usage"]
        if obj is not None:
            readonly += ["scope", "org", "team", "member"]
        return readonly

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets[:2]
        return self.fieldsets

    def has_add_permission(self, request):
        return request.user.has_perm("budgets.add_budget")

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("budgets.change_budget")

    def has_delete_permission(self, request, obj=None):
        # Deleting would erase the history; finance deactivates instead. Superusers keep the escape hatch.
        return request.user.is_superuser

    @admin.display(description="target", ordering="id")
    def target(self, obj: Budget) -> str:
        return obj.target_label

    @admin.display(description="cap", ordering="cap_usd")
    def cap(self, obj: Budget) -> str:
        return f"${obj.cap_usd:,.2f}"

    @admin.display(description="utilisation")
    def usage(self, obj: Budget) -> str:
        return utilisation_bar(budget_status(obj, now=clock.now()).utilisation)

    @admin.display(description="spent", ordering="spent_now")
    def spent(self, obj: Budget) -> str:
        return f"${quantize_usd(obj.spent_now, places=2):,}"  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="reserved", ordering="reserved_now")
    def reserved(self, obj: Budget) -> str:
        return f"${quantize_usd(obj.reserved_now, places=2):,}"  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="forecast")
    def forecast(self, obj: Budget) -> str:
        return f"${budget_status(obj, now=clock.now()).forecast_usd:,}"

    @admin.display(description="current period")
    def current_usage(self, obj: Budget) -> str:
        if obj is None or obj.pk is None:
            return "—"
        status = budget_status(obj, now=clock.now())
        return format_html(
            "{} &nbsp; spent ${} · reserved ${} · remaining ${} · forecast ${} for the period {} → {} (UTC)",
            utilisation_bar(status.utilisation),
            quantize_usd(status.spent_usd, places=2),
            quantize_usd(status.reserved_usd, places=2),
            quantize_usd(status.remaining_usd, places=2),
            status.forecast_usd,
            f"{status.period_start:%Y-%m-%d}",
            f"{status.period_end:%Y-%m-%d}",
        )

    def save_model(self, request, obj: Budget, form, change: bool) -> None:
        if change:
            changes = {field: form.cleaned_data[field] for field in form.changed_data if field in EDITABLE_FIELDS}
            budget_update(budget=obj, changes=changes, user=request.user)
        else:
            budget_create(budget=obj, user=request.user)
        for warning in budget_cap_warnings(budget=obj):
            messages.warning(request, warning)

    @admin.action(description="Reconcile the selected budgets with the ledger now", permissions=["change"])
    def reconcile_selected(self, request, queryset) -> None:
        result = budget_reconcile(budget_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(
            request, f"Reconciled {result.budgets} budget(s); {result.corrected} corrected by ${result.spent_delta_usd}."
        )


@admin.register(BudgetAlert)
class BudgetAlertAdmin(OrgScopedAdminMixin, ReadOnlyMixin, admin.ModelAdmin):
    org_field = "budget__org"
    list_display = [
        "budget",
        "threshold",
        "period_start",
        "spent_usd",
        "cap_usd",
        "created_at",
        "dispatched_at",
        "dispatch_result",
    ]
    list_filter = ["threshold", "budget__scope", "budget__org"]
    list_select_related = ["budget", "budget__org", "budget__team", "budget__member"]
    date_hierarchy = "created_at"


@admin.register(BudgetChange)
class BudgetChangeAdmin(OrgScopedAdminMixin, ReadOnlyMixin, admin.ModelAdmin):
    org_field = "budget__org"
    list_display = ["changed_at", "budget", "field", "old_value", "new_value", "changed_by_label"]
    list_filter = ["field", "budget__org"]
    list_select_related = ["budget", "budget__org", "budget__team", "budget__member"]
    search_fields = ["changed_by_label", "budget__org__name"]


@admin.register(BudgetCounter)
class BudgetCounterAdmin(OrgScopedAdminMixin, ReadOnlyMixin, admin.ModelAdmin):
    org_field = "budget__org"
    list_display = ["budget", "period_start", "spent_usd", "reserved_usd", "updated_at"]
    list_select_related = ["budget", "budget__org", "budget__team", "budget__member"]
    list_filter = ["budget__period", "budget__org"]


@admin.register(Reservation)
class ReservationAdmin(OrgScopedAdminMixin, ReadOnlyMixin, admin.ModelAdmin):
    org_field = "org_id"
    list_display = [
        "id",
        "request_id",
        "member_id",
        "amount_usd",
        "actual_usd",
        "state",
        "created_at",
        "expires_at",
        "settled_at",
    ]
    list_filter = ["state"]
    search_fields = ["=request_id"]
