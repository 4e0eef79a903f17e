from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.alerts.models import SEVERITY_RANK, ScopeType, Severity
from apps.ledger.models import cost_field

__all__ = ["SEVERITY_RANK", "Anomaly", "ScopeType", "Severity"]  # the choices are the alerts app's; re-exported


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
