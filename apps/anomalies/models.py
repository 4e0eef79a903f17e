from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.ledger.models import cost_field


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}


class ScopeType(models.TextChoices):
    ORG = "org"
    TEAM = "team"
    MODEL = "model"
    MEMBER = "member"  # budget alerts on a user's cap; the scan itself stops at team level


class Anomaly(models.Model):
    """One cost incident: consecutive anomalous hours of one series, merged.

    `dedupe_key` is fixed when the incident is first seen (detector, series, first hour); a later
    scan that finds the same run again, or its continuation, updates this row instead of adding one.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    class Feedback(models.TextChoices):
        NONE = "", "—"
        TRUE_POSITIVE = "true_positive", "true positive"
        FALSE_POSITIVE = "false_positive", "false positive"
        PLANNED = "planned", "planned (expected spend)"

    detector = models.CharField(max_length=32, db_index=True)  # spike, iqr, pattern, mix
    metric = models.CharField(max_length=32)  # cost, requests, tokens_per_request, premium_share
    scope_type = models.CharField(max_length=16, choices=ScopeType.choices)
    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=128, blank=True)
    scope_label = models.CharField(max_length=300)
    # The series identity without the window: a later scan extends an open incident of the same series.
    series_key = models.CharField(max_length=300, db_index=True)
    dedupe_key = models.CharField(max_length=64, unique=True)

    window_start = models.DateTimeField()
    window_end = models.DateTimeField()  # exclusive: the end of the last anomalous hour
    expected = models.FloatField()  # the metric summed (or averaged, for ratios) over the window
    actual = models.FloatField()
    impact_usd = cost_field()
    impact_pct = models.FloatField(default=0)
    score = models.FloatField(default=0)
    severity = models.CharField(max_length=16, choices=Severity.choices, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    feedback = models.CharField(max_length=16, choices=Feedback.choices, blank=True, default="")
    # The highest severity already notified; claimed with a conditional UPDATE so a notification
    # goes out once per incident and once per escalation, however many scans run at once.
    notified_severity = models.CharField(max_length=16, choices=Severity.choices, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    # What the person who triaged it found: the cause, the fix, why it was closed.
    triage_note = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "anomalies"
        ordering = ["-window_start"]
        verbose_name_plural = "anomalies"
        indexes = [models.Index(fields=["series_key", "window_end"], name="anomaly_series_end")]
        constraints = [
            models.CheckConstraint(condition=Q(window_end__gt=models.F("window_start")), name="anomaly_window_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.detector} {self.scope_label} {self.window_start:%Y-%m-%d %H:%M}"


class AlertRoute(models.Model):
    """Severity (+ scope type, optional org) → one receiver. Several rows may match one alert.

    Blank `scope_type` and null `org` match everything; `severity` matches exactly, so a page for
    critical and a quieter channel for warning are two rows.
    """

    class Receiver(models.TextChoices):
        WEBHOOK = "webhook", "webhook (Slack-compatible JSON)"
        EMAIL = "email", "email"
        PROMETHEUS = "prometheus", "Prometheus (gauge / Alertmanager)"

    name = models.CharField(max_length=200)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    scope_type = models.CharField(max_length=16, choices=ScopeType.choices, blank=True, help_text="blank: any scope")
    org = models.ForeignKey(
        "tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="empty: any org"
    )
    receiver = models.CharField(max_length=16, choices=Receiver.choices)
    target = models.CharField(max_length=1000, blank=True, help_text="webhook URL, or comma-separated email addresses")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "alert_routes"
        ordering = ["severity", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(receiver="prometheus") | ~Q(target=""), name="alert_route_target_required"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.severity} → {self.receiver})"


class AlertDelivery(models.Model):
    """One alert to one receiver; the Celery task that sends it claims the row with a conditional UPDATE."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    route = models.ForeignKey(AlertRoute, null=True, on_delete=models.SET_NULL, related_name="deliveries")
    anomaly = models.ForeignKey(Anomaly, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    receiver = models.CharField(max_length=16, choices=AlertRoute.Receiver.choices)
    target = models.CharField(max_length=1000, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    scope_type = models.CharField(max_length=16, blank=True)
    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=300)
    text = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alert_deliveries"
        ordering = ["-created_at"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.receiver} {self.severity} {self.title[:40]} ({self.status})"
