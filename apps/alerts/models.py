"""Alert routes (severity, scope, org -> a receiver) and the deliveries sent through them.

Budgets (thresholds) and anomalies (incidents) raise alerts through `apps.alerts.services.alert_dispatch`.
`AlertDelivery.anomaly` names the incident a delivery is about, when it is one: a lazy reference, the alerts
app imports nothing from anomalies (the layer above it).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


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
    anomaly = models.ForeignKey("anomalies.Anomaly", null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
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
