from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.anomalies import services
from apps.anomalies.models import Anomaly
from apps.tenancy.access import OrgScopedAdminMixin


@admin.register(Anomaly)
class AnomalyAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "window_start",
        "severity",
        "status",
        "detector",
        "metric",
        "scope_label",
        "hours",
        "expected_display",
        "actual_display",
        "impact_usd_display",
        "impact_pct_display",
        "feedback",
    )
    list_filter = (
        "severity",
        "status",
        "detector",
        "metric",
        "scope_type",
        "feedback",
        ("org", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("org", "team")
    search_fields = ("scope_label", "model", "dedupe_key")
    date_hierarchy = "window_start"
    ordering = ("-window_start",)
    actions = ("acknowledge", "resolve", "mark_true_positive", "mark_false_positive", "mark_planned")
    readonly_fields = (
        "detector",
        "metric",
        "scope_type",
        "org",
        "team",
        "model",
        "scope_label",
        "series_key",
        "dedupe_key",
        "window_start",
        "window_end",
        "expected",
        "actual",
        "impact_usd",
        "impact_pct",
        "score",
        "severity",
        "notified_severity",
        "details",
        "created_at",
        "updated_at",
        "acknowledged_at",
        "resolved_at",
    )
    fieldsets = (
        ("Triage", {"fields": ("status", "feedback", "triage_note", "severity", "notified_severity")}),
        ("Scope", {"fields": ("detector", "metric", "scope_type", "org", "team", "model", "scope_label")}),
        (
            "Window and impact",
            {"fields": ("window_start", "window_end", "expected", "actual", "impact_usd", "impact_pct", "score", "details")},
        ),
        ("Bookkeeping", {"fields": ("series_key", "dedupe_key", "created_at", "updated_at", "acknowledged_at", "resolved_at")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # incidents come from the scan

    @admin.display(description="hours")
    def hours(self, obj: Anomaly) -> int:
        return int((obj.window_end - obj.window_start).total_seconds() // 3600)

    @admin.display(description="expected", ordering="expected")
    def expected_display(self, obj: Anomaly) -> str:
        return _metric_str(obj.metric, obj.expected)

    @admin.display(description="actual", ordering="actual")
    def actual_display(self, obj: Anomaly) -> str:
        return _metric_str(obj.metric, obj.actual)

    @admin.display(description="impact $", ordering="impact_usd")
    def impact_usd_display(self, obj: Anomaly) -> str:
        return f"${obj.impact_usd:,.2f}"

    @admin.display(description="impact %", ordering="impact_pct")
    def impact_pct_display(self, obj: Anomaly) -> str:
        return f"{obj.impact_pct:+.0f}%"

    @admin.action(description="Acknowledge selected anomalies")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        n = services.anomalies_acknowledge(anomaly_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} anomal{'y' if n == 1 else 'ies'} acknowledged.", messages.SUCCESS)

    @admin.action(description="Resolve selected anomalies")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        n = services.anomalies_resolve(anomaly_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} anomal{'y' if n == 1 else 'ies'} resolved.", messages.SUCCESS)

    def _feedback(self, request: HttpRequest, queryset: QuerySet[Anomaly], feedback: str) -> None:
        n = services.anomalies_set_feedback(anomaly_ids=list(queryset.values_list("id", flat=True)), feedback=feedback)
        label = Anomaly.Feedback(feedback).label
        self.message_user(request, f"{n} anomal{'y' if n == 1 else 'ies'} marked {label}.", messages.SUCCESS)

    @admin.action(description="Feedback: true positive")
    def mark_true_positive(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        self._feedback(request, queryset, Anomaly.Feedback.TRUE_POSITIVE)

    @admin.action(description="Feedback: false positive")
    def mark_false_positive(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        self._feedback(request, queryset, Anomaly.Feedback.FALSE_POSITIVE)

    @admin.action(description="Feedback: planned (expected spend)")
    def mark_planned(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        self._feedback(request, queryset, Anomaly.Feedback.PLANNED)


def _metric_str(metric: str, value: float) -> str:
    if metric == "cost":
        return f"${value:,.2f}"
    if metric == "premium_share":
        return f"{value:.0%}"
    return f"{value:,.1f}"
